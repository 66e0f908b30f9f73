"""Mitogen's linear strategy, for the playbooks that drive the lab VM.

Under the VM's software emulation every task that starts a new Python in the
guest costs seconds; Mitogen keeps one interpreter per host for the whole run.
molecule/vm points ANSIBLE_STRATEGY_PLUGINS here; the strategy itself comes
from the pinned `mitogen` package (requirements.txt). Production runs and the
container lab keep Ansible's own strategy.
"""

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
