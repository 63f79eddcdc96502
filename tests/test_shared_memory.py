"""Shared memory: aiorl_ names, slot layout views, the seqlock weight store, unlink on close."""

from __future__ import annotations

import os

import numpy as np
import pytest

from aiorl.shm import RolloutLayout, RolloutSlots, WeightStore

LAYOUT = RolloutLayout(rollout_length=4, num_envs=3, obs_shape=(2, 2), action_shape=(), action_dtype="<i8")


def test_segments_are_named_aiorl_and_unlinked_on_close():
    slots = RolloutSlots.create(LAYOUT, num_slots=2)
    name = slots.segment.name
    assert name.startswith(f"aiorl_{os.getpid()}_")
    assert os.path.exists(f"/dev/shm/{name}")
    slots.close()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_a_writer_and_an_attached_reader_see_the_same_slot():
    owner = RolloutSlots.create(LAYOUT, num_slots=3)
    reader = RolloutSlots.attach(owner.segment.name, LAYOUT, num_slots=3)
    try:
        owner[1]["obs"][:] = 7.0
        owner[1]["actions"][2, 1] = 5
        owner[2]["versions"][:] = 9
        assert reader[1]["obs"].shape == (4, 3, 2, 2)
        assert (reader[1]["obs"] == 7.0).all()
        assert reader[1]["actions"][2, 1] == 5
        assert (reader[0]["obs"] == 0).all(), "slots must not overlap"
        assert (reader[2]["versions"] == 9).all() and (reader[1]["versions"] == 0).all()
    finally:
        reader.close()
        owner.close()


def test_slots_do_not_overlap_in_memory():
    slots = RolloutSlots.create(LAYOUT, num_slots=2)
    try:
        for name, array in slots[0].items():
            array[...] = 1
            assert not any(np.any(other != 0) for other in slots[1].values()), name
    finally:
        slots.close()


def test_weight_store_publishes_versions_readers_copy_consistently():
    store = WeightStore.create(5)
    reader = WeightStore.attach(store.segment.name, 5)
    try:
        out = np.zeros(5, dtype=np.float32)
        store.publish(np.arange(5, dtype=np.float32), version=0)
        assert reader.read_into(out) == 0
        store.publish(np.full(5, 3.0, dtype=np.float32), version=1)
        assert reader.version == 1
        assert reader.read_into(out) == 1
        np.testing.assert_array_equal(out, 3.0)
    finally:
        reader.close()
        store.close()


def test_weight_store_rejects_wrong_size():
    store = WeightStore.create(5)
    try:
        with pytest.raises(ValueError, match=r"weights.shape=\(4,\)"):
            store.publish(np.zeros(4, dtype=np.float32), version=1)
    finally:
        store.close()
