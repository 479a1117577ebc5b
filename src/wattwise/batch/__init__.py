"""`wattwise batch`: deferred, resumable inference over a large input file."""

from wattwise.batch.calibrate import BatchSizeChoice, BatchSizeTrial, choose_batch_size
from wattwise.batch.run import BatchResult, run_batch

__all__ = ["BatchResult", "BatchSizeChoice", "BatchSizeTrial", "choose_batch_size", "run_batch"]
