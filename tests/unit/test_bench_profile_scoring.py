"""`bench.profile_scoring`: a scoring actor's two threads (Ray's task loop and the thread it hands each batch to)
are read as one, each sample in the category of what it was doing, and processes are told apart by kind."""

from bench.profile import read_samples
from bench.profile_scoring import ACTOR_THREADS, KINDS, WAITING, classify, process_kind

MAIN = "<module> (ray/_private/workers/default_worker.py:323);Worker.main_loop (ray/_private/worker.py:1069)"
HANDED = ("_MapWorker.submit (ray/data/_internal/execution/operators/actor_pool_map_operator.py:778);"
          "make_callable_class_single_threaded.<locals>._SingleThreadedWrapper.__call__ "
          "(ray/data/_internal/execution/util.py:123);Future.result (concurrent/futures/_base.py:451)")  # fmt: skip
BATCH = ("Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83);_WorkItem.run "
         "(concurrent/futures/thread.py:58);ScoreActor.__call__ (pipelines/runtime/batch_inference.py:1)")  # fmt: skip
SCORE = "ScoreActor._score (pipelines/runtime/batch_inference.py:201);Detector.score_rows (vae/detector.py:95)"
IMPORT = "_find_and_load (<frozen importlib._bootstrap>:1176)"


def test_an_actors_samples_are_its_batch_threads_work_and_its_main_threads_waits(tmp_path):
    raw = tmp_path / "actor.txt"
    raw.write_text(
        f"{MAIN};{HANDED} 50\n"  # the main thread waits on the batch thread: counted there, not twice
        f"{BATCH};{SCORE};negative_elbo (vae/scoring.py:118) 40\n"
        f"{BATCH};quarantine_reasons (pipelines/runtime/batch_inference.py:90) 6\n"
        f"{BATCH};ScoreActor._with_constants (pipelines/runtime/batch_inference.py:190) 3\n"
        f"{MAIN} 9\n"  # between batches
        f"{MAIN};Worker.deserialize_objects (ray/_private/worker.py:960);{IMPORT} 7\n"
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 30\n"  # the idle batch thread
        "Thread.run (threading.py:982);PythonGCThread.run (ray/_private/gc_collect_manager.py:29) 80\n"
    )
    assert read_samples(raw, ACTOR_THREADS, classify) == {
        "the model's scores (Detector.score_rows)": 40, "quarantine checks": 6, "scored rows as Arrow columns": 3,
        WAITING: 9, "module imports": 7,
    }  # fmt: skip


def test_the_plain_loops_samples_and_the_process_kinds():
    loop = "plain_loop (bench/scoring.py:66)"
    assert classify([loop, "Detector.score_rows (vae/detector.py:95)"]) == "the model's scores (Detector.score_rows)"
    assert classify([loop, "ParquetWriter.write_table (pyarrow/parquet/core.py:1)"]) == "writing Parquet"
    assert classify([loop, "_dataset_to_batches (pyarrow/_dataset.pyx:1)"]) == "reading Parquet"
    assert classify([loop, "helper (somewhere.py:1)"]) == "other"
    assert process_kind("python -m bench profile", 7, driver=7) == KINDS[0]
    assert process_kind("ray::MapWorker(MapBatches(ScoreActor))", 8, driver=7) == KINDS[1]
    assert process_kind("ray::ReadParquet->SplitBlocks(10)", 9, driver=7) == KINDS[2]
    assert (
        process_kind("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --x", 10, driver=7) == KINDS[3]
    )
