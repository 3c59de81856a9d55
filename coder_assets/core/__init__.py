"""Pure logic of coder_assets: plain data in, plain data out, no Dagster imports."""
