"""Workflows built from the tools' own command lines, shared by `python -m slim demo`,
bench/accuracy.py and users' scripts: a step run as a subprocess with its command echoed
and its output streamed and logged (`steps`), the LR schedule of a run of N iterations
(`schedule`), a checkpoint's parameters as a weights directory (`models`), Paddle
Inference latency of several models measured interleaved (`latency`), and the
directories a workflow owns and empties (`places`).

Imports: runs and everything below; never commands.
"""
