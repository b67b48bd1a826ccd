"""What each Ray Train rank trains on, epoch by epoch, through `ShardBatches` over Ray Train's own split of the
training dataset (as `WorkerRun` reads it): the ranks' rows are disjoint and together every row once per epoch, and
rows stored in order come in a different order every epoch, whether a shard is kept in memory or streamed."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

ROWS, EPOCHS, BATCH, SEED = 600, 3, 32, 11


def _record_epochs(config: dict) -> None:
    """Each rank writes the row ids (column 0 of x) it was given, epoch by epoch, in order, to OUT/<rank>.json."""
    import ray.train

    from pipelines.runtime.shard_batches import ShardBatches

    shard = ShardBatches(ray.train.get_dataset_shard("train"), config["budget"])
    seen = [[int(v) for batch in shard.batches(BATCH, seed=SEED + epoch) for v in batch["x"][:, 0].tolist()]
            for epoch in range(EPOCHS)]  # fmt: skip
    rank = ray.train.get_context().get_world_rank()
    Path(config["out"], f"{rank}.json").write_text(json.dumps({"seen": seen, "in_memory": shard.in_memory}))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("budget", [1 << 20, 0], ids=["kept-in-memory", "streamed"])
def test_ranks_split_every_epoch_disjointly_and_ordered_rows_are_reshuffled_each_epoch(local_ray, tmp_path, budget):
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.runtime.distributed_run import fit

    ids = np.arange(ROWS, dtype=np.float32)  # stored in order, in several blocks
    rows = ray.data.from_numpy(np.stack([ids, ids % 7], axis=1)).rename_columns({"data": "x"}).repartition(6)
    out = tmp_path / "seen"
    out.mkdir()
    trainer = TorchTrainer(
        _record_epochs, train_loop_config={"budget": budget, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=2), datasets={"train": rows},
        run_config=RunConfig(name="shard-epochs", storage_path=str(tmp_path / "runs")),
    )  # fmt: skip
    fit(trainer)
    ranks = [json.loads((out / f"{rank}.json").read_text()) for rank in range(2)]
    assert [r["in_memory"] for r in ranks] == [budget > 0] * 2
    for epoch in range(EPOCHS):
        first, second = (r["seen"][epoch] for r in ranks)
        assert len(first) == len(second) == ROWS // 2  # equal shards: both ranks take as many steps
        assert not set(first) & set(second)
        assert sorted(first + second) == list(range(ROWS))  # every row once per epoch across the ranks
    for rank in ranks:
        orders = rank["seen"]
        assert all(order != sorted(order) for order in orders)  # shuffled, not the stored order
        assert len({tuple(order) for order in orders}) == EPOCHS  # a different order every epoch
        assert all(order[:BATCH] != other[:BATCH] for order, other in itertools.pairwise(orders))  # first batch too


@pytest.mark.timeout(120)
def test_the_training_read_takes_the_files_in_another_order_every_execution(local_ray, tmp_path):
    """A streamed shard re-executes the read every epoch: with rows stored in order across files (by date, say),
    each execution starts from other files, and still reads every row once."""
    import pandas as pd
    import ray.data

    from pipelines.runtime.cluster import data_context_values
    from pipelines.runtime.parquet_input import read_rows
    from pipelines.settings.yaml_configs import DataConfig

    files, per_file = 6, 50
    for i in range(files):
        ids = np.arange(i * per_file, (i + 1) * per_file)
        pd.DataFrame({"row_id": ids, "x": ids * 0.5}).to_parquet(tmp_path / f"day-{i}.parquet", index=False)
    orders = []
    with data_context_values(execution_options=ray.data.ExecutionOptions(preserve_order=True)):
        rows = read_rows(DataConfig(path=str(tmp_path), numeric=["x"], key=["row_id"]))
        for _ in range(2):
            ids = [int(v) for batch in rows.iter_batches(batch_size=None) for v in batch["row_id"]]
            assert sorted(ids) == list(range(files * per_file))
            orders.append(tuple(dict.fromkeys(v // per_file for v in ids)))  # the files in the order they came
    assert orders[0] != orders[1] and tuple(range(files)) not in orders, orders
