"""`bench.profile`: each py-spy sample of the training thread gets the category of what it was doing, and only
that thread's samples are read."""

from bench.profile import classify, read_samples

WORKER = "train_loop_per_worker (pipelines/runtime/worker_loop.py:321)"
EPOCH = "WorkerRun.run_epoch (pipelines/runtime/worker_loop.py:257)"
STEP = "train_epoch (vae/engine.py:172)"
FORWARD = [
    "_batch_loss (vae/engine.py:145)",
    "VAE.forward (vae/model.py:90)",
    "Linear.forward (torch/nn/modules/linear.py:125)",
]


def test_a_forward_counts_as_training_or_validation_by_the_phase_it_runs_in():
    assert classify([WORKER, EPOCH, STEP, *FORWARD]) == "forward + loss"
    assert classify([WORKER, EPOCH, "evaluate (vae/engine.py:210)", *FORWARD]) == "validation pass"
    assert classify([WORKER, EPOCH, STEP, "Tensor.backward (torch/_tensor.py:625)"]) == (
        "backward (DDP: + gradient all-reduce)")  # fmt: skip
    adam = "Adam.step (torch/optim/adam.py:248)"
    assert classify([WORKER, EPOCH, STEP, adam]) == "optimiser step + gradient clipping"
    assert classify([WORKER, EPOCH, STEP, "ShardBatches._kept_batches (pipelines/runtime/shard_batches.py:63)"]) == (
        "drawing batches")  # fmt: skip
    assert classify([WORKER, EPOCH, STEP, "helper (somewhere.py:1)"]) == "other, in a training pass"


def test_imports_and_the_split_start_count_wherever_they_happen():
    step_import = [WORKER, EPOCH, STEP, "Adam.step (torch/optim/adam.py:248)",
                   "_find_and_load (<frozen importlib._bootstrap>:1176)"]  # fmt: skip
    assert classify(step_import) == "module imports on first use"
    split = [
        WORKER,
        EPOCH,
        STEP,
        "ShardBatches.batches (pipelines/runtime/shard_batches.py:39)",
        "StreamSplitDataIterator._get_dataset_tag (ray/data/_internal/iterator/stream_split_iterator.py:1)",
    ]
    assert classify(split) == "Ray Data split: start of a streamed pass"
    assert classify([WORKER, "WorkerRun.report (pipelines/runtime/worker_loop.py:280)"]) == "checkpoint + report"


def test_only_the_training_threads_samples_are_counted(tmp_path):
    raw = tmp_path / "worker.txt"
    raw.write_text(f"{WORKER};{EPOCH};{STEP};{FORWARD[0]} 7\n"
                   "Thread.run (threading.py:982);poll (ray/_private/worker.py:1) 500\n"
                   f"{WORKER};{EPOCH};evaluate (vae/engine.py:210) 3\n")  # fmt: skip
    assert read_samples(raw) == {"forward + loss": 7, "validation pass": 3}
    assert read_samples(tmp_path / "missing.txt") == {}
