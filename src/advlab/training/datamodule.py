"""In-memory tensors as a LightningDataModule."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from advlab.data import stratified_split


class _Tensors(torch.utils.data.Dataset):
    """Indexable by a whole batch of indices at once: one gather per batch instead of
    one ``__getitem__`` + collate per image (several times faster for small nets)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


class _RankShare(torch.utils.data.Sampler):
    """Rank ``rank``'s share of every batch of ``batches``: items rank, rank + world, ... All ranks draw
    the same batches (same generator), so together they take exactly the batch one process would.
    A last batch too small to give every rank an item is left out, by all ranks alike."""

    def __init__(self, batches: BatchSampler, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self):
        for batch in self.batches:
            if len(batch) >= self.world:
                yield batch[self.rank::self.world]

    def __len__(self) -> int:
        n, size = len(self.batches.sampler), self.batches.batch_size
        return n // size + (1 if n % size >= self.world else 0)


def _loader(tensors: tuple[torch.Tensor, ...], batch_size: int, shuffle: bool, seed: int,
            generator: torch.Generator | None = None, rank: int = 0, world: int = 1) -> DataLoader:
    """Shuffled with ``generator`` (default: a new one seeded with ``seed``), or in index order;
    with ``world`` > 1, only rank ``rank``'s share of each batch (see :class:`_RankShare`)."""
    ds = _Tensors(*tensors)
    if shuffle:
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(ds, generator=generator)
    else:
        sampler = SequentialSampler(ds)
    batches = BatchSampler(sampler, batch_size, drop_last=False)
    # batch_size=None: the BatchSampler's index lists go straight to __getitem__.
    return DataLoader(ds, sampler=batches if world == 1 else _RankShare(batches, rank, world), batch_size=None,
                      num_workers=0)


class ArrayDataModule(pl.LightningDataModule):
    """Train / validation / optional test loaders over tensors held in memory.

    The validation set is a class-stratified ``val_fraction`` of ``(x_train, y_train)``
    chosen with ``seed`` (labels may be hard ``[N]`` or soft ``[N, K]``; soft ones are
    stratified by their argmax). The training loader reshuffles every epoch from a
    generator seeded with ``seed``, so two fits see the same batches in the same order.

    That generator's state is the module's ``state_dict``: restored from a checkpoint (before
    Lightning asks for the training loader), it makes the next epoch draw the permutation an
    uninterrupted fit would draw there.

    In a multi-process (DDP) fit each rank takes its share of every batch, and every rank
    validates on the whole validation set.
    """

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        *,
        val_fraction: float = 0.1,
        batch_size: int = 64,
        seed: int = 0,
        x_test: torch.Tensor | None = None,
        y_test: torch.Tensor | None = None,
        eval_batch_size: int = 1000,
    ) -> None:
        super().__init__()
        if len(x_train) != len(y_train):
            raise ValueError(f"x_train has {len(x_train)} items but y_train has {len(y_train)}")
        if (x_test is None) != (y_test is None):
            raise ValueError("give both x_test and y_test, or neither")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = len(y_train)
        n_val = int(round(val_fraction * n))
        if val_fraction > 0 and n_val == 0:
            n_val = 1
        strata = y_train if y_train.ndim == 1 else y_train.argmax(dim=1)
        train_idx, val_idx = stratified_split(strata.cpu().numpy(), [n - n_val, n_val], seed)
        self.train_idx = torch.as_tensor(train_idx)
        self.val_idx = torch.as_tensor(val_idx)
        self.x_train, self.y_train = x_train[self.train_idx], y_train[self.train_idx]
        self.x_val, self.y_val = x_train[self.val_idx], y_train[self.val_idx]
        self.x_test, self.y_test = x_test, y_test
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self._train_generator: torch.Generator | None = None  # the training loader's, once built
        self._restored_generator_state: torch.Tensor | None = None

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_val(self) -> int:
        return len(self.x_val)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        if self._restored_generator_state is not None:
            generator.set_state(self._restored_generator_state)
            self._restored_generator_state = None  # once: a later loader starts from the seed again
        self._train_generator = generator
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return _loader((self.x_train, self.y_train), self.batch_size, shuffle=True, seed=self.seed,
                       generator=generator, rank=rank, world=world)

    def state_dict(self) -> dict:
        if self._train_generator is None:
            return {}
        return {"train_generator": self._train_generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored_generator_state = state_dict.get("train_generator")

    def val_dataloader(self) -> DataLoader:
        return _loader((self.x_val, self.y_val), self.eval_batch_size, shuffle=False, seed=self.seed)

    def test_dataloader(self) -> DataLoader:
        if self.x_test is None:
            raise RuntimeError("this ArrayDataModule was built without x_test / y_test")
        return _loader((self.x_test, self.y_test), self.eval_batch_size, shuffle=False, seed=self.seed)
