# Entry points. `make lab` provisions the local lab; `make test` runs every
# test stage (what CI runs). Both install what they need first.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PYTHON ?= python3
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# ansible-core imports cryptography's DSA support, which warns on every run;
# no setting of ours uses DSA, and a warning nobody can act on hides real ones.
export PYTHONWARNINGS := ignore:DSA is deprecated:UserWarning
COLLECTION_LINK := .collections/ansible_collections/enclave/llm

.PHONY: deps lab lab-up lab-destroy lab-purge lab-vm lab-vm-destroy audit controls-doc role-docs test check lint unit integration molecule build-collection

deps: $(VENV)/.installed $(COLLECTION_LINK)
	@lab/install-deps

# The venv is made once per machine for each requirements.txt, in the lab's
# machine-wide cache (lab/lib.sh), and .venv links to it: a fresh clone with
# the same pins installs nothing.
$(VENV)/.installed: requirements.txt
	@lab/venv "$(VENV)" requirements.txt "$(PYTHON)"

$(COLLECTION_LINK):
	@mkdir -p $(dir $@)
	@ln -sfn ../../.. $@

lab: deps
	lab/up
	ansible-playbook -i inventories/lab site.yml
	@echo "lab provisioned; log in with: ssh -i .lab/ssh/id_ed25519 enclave-admin@198.51.100.20"
	@echo "ask the model over HTTPS as the lab's clinic-app (this machine is on the clinical network):"
	@echo "  curl --cacert .lab/tls/ca.crt --resolve llm.lab.enclave.invalid:443:203.0.113.200 \\"
	@echo "    -H \"Authorization: Bearer \$$(cat .lab/ingress/clients/clinic-app.key)\" -H 'Content-Type: application/json' \\"
	@echo "    https://llm.lab.enclave.invalid/v1/chat/completions -d '{\"model\":\"tiny-r1\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'"

lab-up: deps
	lab/up

lab-destroy:
	lab/down --all

lab-purge:
	lab/down --purge

# The VM tier: a real kernel under qemu for what a container cannot hold.
lab-vm: deps
	lab/up
	lab/vm/up
	ansible-playbook -i inventories/lab_vm site.yml

lab-vm-destroy:
	lab/vm/down

# The compliance re-run on the lab (docs/audit.md): evidence under evidence/.
audit: deps
	ansible-playbook -i inventories/lab playbooks/audit.yml

# docs/controls.md is generated from docs/controls.yml.
controls-doc: deps
	PYTHONPATH=.collections python3 -m ansible_collections.enclave.llm.plugins.module_utils.evidence.control_catalogue \
		docs/controls.yml > docs/controls.md

# Each role's variable table in its README.md, from meta/argument_specs.yml.
role-docs: deps
	python3 tests/role_readmes.py

test: deps
	tests/run-stages

check: deps
	tests/run-stages check

lint: deps
	tests/run-stages lint

unit: deps
	tests/run-stages unit

integration: deps
	tests/run-stages integration

molecule: deps
	tests/run-stages molecule

build-collection: deps
	ansible-galaxy collection build --force --output-path build/
