# Shortcuts for scripts/run.sh, which holds the commands (the README's quick
# start uses it directly: a fresh Debian has sh but no make).
.PHONY: demo test lint bench bootstrap

demo test lint bench:
	@sh scripts/run.sh $@

bootstrap:
	@sh scripts/bootstrap.sh
