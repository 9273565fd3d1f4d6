"""The library's errors keep their fields through pickling (a worker process's error reaches its parent)."""

import pickle

import pytest

from jaxdrop.errors import CheckpointError, CheckpointMismatchError, TrainingDivergedError, TrainingStopped


@pytest.mark.parametrize("error", [
    CheckpointError("no readable checkpoint left", directory="/tmp/c", fix=("resume", "directory")),
    CheckpointMismatchError("trained 3 epochs.", directory="/tmp/c", fix=("epochs",), step=21, at_least=3),
    TrainingDivergedError(12, float("inf")),
    TrainingStopped(8, checkpointed=True),
], ids=lambda e: type(e).__name__)
def test_errors_pickle_with_their_message_and_fields(error):
  again = pickle.loads(pickle.dumps(error))
  assert type(again) is type(error) and str(again) == str(error) and again.args == error.args
  assert vars(again) == vars(error)
