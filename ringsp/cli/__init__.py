"""`ringsp generate`: run a Wan (video) or Qwen-Image / Qwen-Image-Edit (image) pipeline under
sequence parallelism, timed stage by stage.

Modules: args (parser and checks), request (a validated run), devices (cpu / cuda / npu and
their process-group backends), launch (spawn / torchrun / single process), supervise (the
spawned ranks: a failed rank ends the run, named, with no process left), worker (one rank:
the Engine, loaded once and run many times, as ringsp serve does),
generation (the stage-timed loop) with its model runs wan_loop and qwen_loop, timing,
memory, report (JSON and tables), output (the output file: checked first, frames kept if
writing fails), video (mp4 output), image (png output), main (the console script).
"""
