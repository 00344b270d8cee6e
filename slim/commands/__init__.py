"""The command-line jobs: what compress.py, train.py, eval.py and infer.py run (`compress`,
`train`, `evaluate`, `infer`), and the `python -m slim COMMAND` subcommands (`inspect`,
`sensitivity`, `pretrain`, `demo`, ...; see SUBCOMMANDS in slim/__main__.py). `cli` holds
the flags they share.

Commands import everything below them (runs, engine, strategies, io, ...); nothing
imports a command except slim/__main__.py and the top-level scripts.
"""
