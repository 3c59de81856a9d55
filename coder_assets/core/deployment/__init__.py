"""Deployment stage (`adapter_release`, `deployed_adapter`): publishing an adapter, installing it
on waterdeep, and the model server behind its proxy, with when and how long it may be down.

    release   publishing an adapter version to the `code-lora-adapters` git repository
    deploy    installed adapter versions: the atomic `latest` swap, rollback, pruning
    smoke     the smoke test of a restarted server and the adapter fingerprint
    launchd   the model server's launchd agent
    proxy     the authenticating proxy: API keys file and Caddy's config
    host      the waterdeep host guard and lock
    window    the maintenance window for train_deploy_job
    downtime  how long a train_deploy_job run kept the model server down
"""
