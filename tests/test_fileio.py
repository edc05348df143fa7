"""The npz shard cache of pipeline.fileio: shards of a fixed size, no pickle, made once."""
import numpy as np

from emotion_pipeline.fileio import json_digest, load_shards, save_shards, shard_cache


def test_shards_round_trip_across_several_files(tmp_path):
    arrays = {"x": np.arange(10, dtype=np.float32).reshape(5, 2), "name": np.array(list("abcde"), dtype="U8")}
    save_shards(tmp_path, "pool", arrays, rows=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool-000.npz", "pool-001.npz", "pool-002.npz"]
    back = load_shards(tmp_path, "pool")
    assert all(np.array_equal(back[k], a) and back[k].dtype == a.dtype for k, a in arrays.items())
    assert load_shards(tmp_path, "other") is None


def test_shard_cache_makes_once_and_keys_by_content(tmp_path):
    assert json_digest({"b": 1, "a": (2, 3)}) == json_digest({"a": [2, 3], "b": 1}) != json_digest({"a": 1})
    calls = []

    def make():
        calls.append(1)
        return {"clips": {"probs": np.ones((3, 7), np.float32)}}, {"clips": 3}

    folder = tmp_path / json_digest({"spec": 1})
    first = shard_cache(folder, ("clips",), make)
    again = shard_cache(folder, ("clips",), make)
    assert len(calls) == 1 and np.array_equal(first["clips"]["probs"], again["clips"]["probs"])
    assert (folder / "meta.json").read_text().strip().endswith("}")
