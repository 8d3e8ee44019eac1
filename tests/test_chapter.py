"""The chapter's experiment: Trainer('myadam') against the chapter's own adam(), step by step."""
import json

import numpy as np
import pytest

import cli
from adam_plugin.chapter import linreg


@pytest.fixture(scope='module')
def chapter_runs():
    features, labels = linreg.make_dataset(seed=0)
    kw = dict(batch_size=10, lr=0.1, num_epochs=3, seed=0)
    return linreg.train_reference(features, labels, **kw), linreg.train_trainer(features, labels, **kw)


@pytest.mark.slow
def test_every_step_matches_the_chapters_adam(chapter_runs):
    ref, ours = chapter_runs
    assert ref.trace.shape == ours.trace.shape == (300, 3)
    assert np.abs(ref.trace - ours.trace).max() <= 1e-5
    # The trace really moves: a frozen run would also "match".
    assert np.abs(ours.trace[-1] - ours.trace[0]).max() > 1.0


@pytest.mark.slow
def test_fit_lands_on_the_true_parameters(chapter_runs):
    _, ours = chapter_runs
    np.testing.assert_allclose(ours.w, linreg.TRUE_W, atol=0.01)
    assert abs(ours.b - linreg.TRUE_B) <= 0.01
    assert ours.loss < 1e-4
    assert ours.losses[0] > 1.0  # it started far away


def test_batches_are_seeded_and_shuffled():
    features, labels = linreg.make_dataset(num_examples=20, seed=3)
    first = [y.asnumpy() for _, y in linreg.data_iter(5, features, labels, seed=7)]
    again = [y.asnumpy() for _, y in linreg.data_iter(5, features, labels, seed=7)]
    other = [y.asnumpy() for _, y in linreg.data_iter(5, features, labels, seed=8)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
    np.testing.assert_array_equal(np.sort(np.concatenate(first)), np.sort(labels.asnumpy()))


def test_dataset_follows_the_chapter():
    features, labels = linreg.make_dataset(seed=0)
    assert features.shape == (1000, 2) and labels.shape == (1000,)
    X, y = features.asnumpy(), labels.asnumpy()
    noise = y - (X @ np.array([2, -3.4]) + 4.2)
    assert 0.008 < noise.std() < 0.012


def run_cli(*args):
    return cli.run_cli(*args).stdout


@pytest.mark.slow
def test_cli_json_is_one_object(tmp_path):
    plot = tmp_path / 'loss.png'
    out = run_cli('linreg', '--json', '--plot', str(plot))
    result = json.loads(out)  # fails on anything but exactly one JSON document
    assert set(result) == {'w', 'b', 'loss', 'max_abs_diff'}
    assert len(result['w']) == 2
    np.testing.assert_allclose(result['w'], linreg.TRUE_W, atol=0.01)
    assert result['max_abs_diff'] <= 1e-5 and result['loss'] < 1e-4
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_cli_options_change_the_run():
    fast = json.loads(run_cli('linreg', '--json', '--epochs', '1', '--lr', '0.5',
                              '--batch-size', '20', '--seed', '2'))
    default = json.loads(run_cli('linreg', '--json'))
    assert fast['loss'] != default['loss']


@pytest.mark.slow
def test_cli_human_output_names_the_numbers():
    out = run_cli('linreg', '--epochs', '1')
    assert 'w:' in out and 'b:' in out and 'final loss' in out and 'difference' in out
