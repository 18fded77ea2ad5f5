"""Calls users make with a slightly different argument than the one documented: they work as compile() would take
them, or fail with the library's own message naming what is wrong (each failed, or failed misleadingly, before)."""
import os

import numpy as np
import pytest

import cnnnative as cn


def test_confusion_matrix_takes_scores_without_num_classes(tmp_path):
    pytest.importorskip("matplotlib")
    from cnnnative import viz
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 8)
    scores = rng.standard_normal((8, 10)).astype(np.float32)
    path = viz.confusion_matrix(y, scores, str(tmp_path / "c.png"))  # 10 classes from the scores' columns
    assert os.path.getsize(path) > 0
    np.testing.assert_array_equal(viz.confusion_counts(y, scores, 10).sum(), 8)


def test_memory_plan_takes_input_shapes_as_compile_does(tmp_path):
    pytest.importorskip("matplotlib")
    from cnnnative import viz
    m = cn.models.lenet5(seed=0)
    assert os.path.getsize(viz.memory_plan(m, str(tmp_path / "a.png"), modes=("infer",))) > 0  # declared shape
    assert os.path.getsize(viz.memory_plan(m, str(tmp_path / "b.png"), input_shape=8, modes=("infer",))) > 0
    g = cn.load(cn.io.dumps(m, 4))
    assert os.path.getsize(viz.memory_plan(g, str(tmp_path / "c.png"), modes=("infer",))) > 0

    class NoShape(cn.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="memory_plan: compile\\(\\): NoShape declares no input shape"):
        viz.memory_plan(NoShape(), str(tmp_path / "d.png"), modes=("infer",))


def test_training_an_int8_model_says_it_is_int8():
    m = cn.models.lenet5(seed=0)
    q = cn.quantize(m, [np.random.default_rng(0).random((8, 1, 28, 28), np.float32)])
    with pytest.raises(cn.Error, match=r"an int8 model \(cnnnative.quantize\) compiles for inference only"):
        q.compile(8, mode="train")
    with pytest.raises(cn.Error, match="a model loaded from a file compiles for inference only"):
        cn.load(cn.io.dumps(m, 1)).compile(1, mode="train")


@pytest.mark.parametrize("bad", [True, False, 2.0, None, 1.5, [2]])
def test_set_num_threads_refuses_what_is_not_a_count(bad):
    before = cn.get_num_threads()
    with pytest.raises(cn.Error, match="set_num_threads: n must be a thread count \\(int\\) or 'auto', got"):
        cn.set_num_threads(bad)
    assert cn.get_num_threads() == before
    cn.set_num_threads(np.int64(before))  # a numpy integer is a count
    assert cn.get_num_threads() == before
