"""The run: one (task, model, method, seed) trained and recorded. Nothing here knows of sweeps, stores, experiment
files, searches or commands: whoever starts a run passes in what it needs (a stop check, a folder), so imports
point one way (tests/test_imports.py).

    run.py         run_training: set up (data, teacher, model) -> fit -> save; TrainResult (metrics.json)
    loop.py        fit: the accelerate loop (batches, the method's loss, evaluation, the best state)
    start.py       what a run starts from: the model, tokenizer and base it trains, the teacher folder it names
    teacher.py     the teacher's logits: cached by example id and content digest, or run beside the student
    checkpoint.py  checkpoints to resume a killed run from
    tracking.py    TensorBoard / MLflow through accelerate's trackers
"""

from kdlora.train.run import DEV_SUBSET_SEED, TrainResult, load_data, run_training

__all__ = ["DEV_SUBSET_SEED", "TrainResult", "load_data", "run_training"]
