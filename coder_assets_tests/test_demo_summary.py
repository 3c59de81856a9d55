"""What the demo prints of a failed run: the step, the first line of its error and the run's page
in the UI; the traceback stays in the run's log."""

from __future__ import annotations

import dagster as dg

from coder_assets.demo.run import QUIET_RUN_CONFIG, failure_summary


@dg.op
def fim_samples_like_step() -> None:
    raise ValueError(
        "dedup unit fim:abc has two different texts\nsecond line of detail\nthird line"
    )


@dg.job
def failing_job() -> None:
    fim_samples_like_step()


def test_a_failed_step_is_named_with_its_first_error_line_and_the_run_link(
    capfd, monkeypatch
) -> None:
    monkeypatch.setenv("CODER_ASSETS_UI_URL", "http://dagster.lan:3000/")
    with dg.instance_for_test() as instance:
        outcome = failing_job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG
        )
        summary = failure_summary(instance, outcome.run_id)
        printed = capfd.readouterr()

    assert not outcome.success
    first, link = summary.splitlines()
    assert first == (
        "step fim_samples_like_step failed: ValueError: dedup unit fim:abc has two different texts"
    )
    assert link.strip().startswith(
        f"log and traceback: http://dagster.lan:3000/runs/{outcome.run_id}"
    )
    assert "Traceback" not in printed.out + printed.err
    assert "second line" not in printed.out + printed.err
