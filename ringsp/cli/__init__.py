"""`ringsp generate`: run a Wan pipeline under sequence parallelism, timed stage by stage.

Modules: args (parser and checks), request (a validated run), launch (spawn / torchrun /
single process), worker (one rank), generation (the stage-timed loop), timing, memory,
report (JSON and tables), video (mp4 output), main (the console script).
"""
