"""The private Ray and PyTorch APIs the package relies on, each isolated in one small function
(named in its docstring with the version it was checked against). When an upgrade removes one,
these tests fail here, by name, instead of a run failing or silently changing later."""
from __future__ import annotations

import torch
from torch import nn


def test_ray_train_report_loggers_can_be_filtered():
    from ray.train.v2._internal.execution import context, storage

    from dfei.train.worker import _not_a_report_line, quiet_ray_train_report_logs

    assert quiet_ray_train_report_logs() is True
    assert _not_a_report_line in context.logger.filters and _not_a_report_line in storage.logger.filters
    quiet_ray_train_report_logs()  # idempotent: one filter per logger
    assert context.logger.filters.count(_not_a_report_line) == 1


def test_a_restored_tuners_callbacks_can_be_replaced():
    from ray import tune

    from dfei.experiments.tune.sweep import replace_restored_callbacks

    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(callbacks=[]))
    marker = tune.Callback()
    replace_restored_callbacks(tuner, [marker])
    assert tuner._local_tuner.get_run_config().callbacks == [marker]


def test_ddp_can_ignore_one_parameter():
    from torch.nn.parallel import DistributedDataParallel

    from dfei.train.distributed import exclude_sparse_embedding_from_ddp

    assert callable(getattr(DistributedDataParallel, "_set_params_and_buffers_to_ignore_for_model", None))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(10, 4, sparse=True)
            self.embedding.sparse = True
            self.head = nn.Linear(4, 1)

    model = Model()
    assert exclude_sparse_embedding_from_ddp(model) is True
    assert getattr(model.embedding.weight, "_ddp_ignored", False) is True
    assert not getattr(model.head.weight, "_ddp_ignored", False)
    assert isinstance(model.embedding.weight, torch.Tensor)
