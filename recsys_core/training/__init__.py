"""Training GraphRec: settings (`config`), what a step draws (`sampling`), the objective
(`losses`), the optimizer (`optimizer`), validation (`validation`), run state and checkpoints
(`state`), the loop (`loop`), and the artifact that carries the result (`pipeline`)."""
