"""A converged lab host reports zero changes in check mode."""

from labkit import play_recap, run_playbook


def test_check_mode_on_converged_host_changes_nothing():
    result = run_playbook("site.yml", "--check", "--diff")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    recap = play_recap(result.stdout)
    assert recap, f"no PLAY RECAP in the output:\n{result.stdout[-2000:]}"
    for host, counts in recap.items():
        assert counts["changed"] == 0, (
            f"{host}: check mode would change {counts['changed']} things:\n{result.stdout[-6000:]}"
        )
        assert counts["failed"] == 0, counts
        assert counts["unreachable"] == 0, counts
