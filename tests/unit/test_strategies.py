"""Adaptation strategies end to end on tiny random tasks, checked against independent references."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from atlbench._runner import make_selection
from atlbench.budgets import BudgetSpec, select_budget
from atlbench.protocol import TrainingConfig
from atlbench.registry import STRATEGIES
from atlbench.sources._base import Encoder, Source
from atlbench.strategies import CellContext, CellOutcome
from atlbench.strategies.finetune import FinetuneParams, finetune_groups
from atlbench.strategies.frozen import fit_probe
from atlbench.strategies.lora import LoRAParams, auto_targets, inject_lora
from atlbench.strategies.lpft import set_head
from atlbench.strategies.unfreeze import unfreeze_schedule
from atlbench.study import resolve_search
from atlbench.targets._base import Split, TaskData
from atlbench.train import Classifier

CPU = torch.device("cpu")
FAST = TrainingConfig(
    max_epochs=2, patience=2, batch_size=8, trials=2, warmup_epochs=0, min_epoch_samples=64
)


def image_task(classes: int = 3, seed: int = 0, n: tuple[int, int, int] = (8, 4, 4)) -> TaskData:
    """32x32 images whose class shifts one colour channel: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)

    def split(per_class: int) -> Split:
        y = np.repeat(np.arange(classes), per_class)
        x = rng.normal(110, 30, size=(len(y), 32, 32, 3))
        x[np.arange(len(y)), :, :, y % 3] += 60
        return Split(np.clip(x, 0, 255).astype(np.uint8), y)

    return TaskData("img", "image", [f"c{i}" for i in range(classes)], *map(split, n))


def timm_encoder(arch: str) -> Encoder:
    import timm

    from atlbench.sources.timm import TimmEncoder

    torch.manual_seed(0)
    kwargs = {"img_size": 32} if "vit" in arch else {}
    return TimmEncoder(timm.create_model(arch, pretrained=False, **kwargs), 32, True)


def context(
    task: TaskData,
    encoder: Encoder,
    strategy: str,
    *,
    budget_idx: np.ndarray | None = None,
    budgeted: bool = False,
    training: TrainingConfig = FAST,
    search: dict[str, Any] | None = None,
    **params: Any,
) -> CellContext:
    """A cell context as the runner builds it: labels outside the budget (and the test labels)
    hidden, selection from :func:`make_selection`; ``validation: full`` unless ``budgeted``."""
    from atlbench._features import extract

    cls = STRATEGIES.get(strategy)
    p = cls.Params.model_validate(params)
    source = Source("s", "test", task.modality, "a", {"s": 1}, builder=lambda _: encoder)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}

    def build(pretrained: bool) -> Encoder:  # the runner's cache: same object, weights reloaded
        encoder.load_state_dict(state)
        return encoder

    idx = np.arange(len(task.train)) if budget_idx is None else np.sort(budget_idx)
    selection = make_selection(task.train.labels, idx, budgeted, training, 0, cls.trainable)
    masked = task.masked(idx, keep_val_labels=not budgeted)
    features: dict[str, np.ndarray] = {}

    def feats(split: str) -> np.ndarray:
        if split not in features:
            features[split] = extract(build(True), masked.split(split), CPU).features
        return features[split]

    space = search if search is not None else resolve_search(cls, p, training.search, None)
    return CellContext(
        source=source, task=masked, budget_idx=idx, selection=selection, seed=0, device=CPU,
        training=training, search=space, params=p, pretrained=True, features=feats,
        build_encoder=build,
    )  # fmt: skip


def run(ctx: CellContext, strategy: str) -> CellOutcome:
    return STRATEGIES.get(strategy)().run(ctx)


def check_outcome(out: CellOutcome, task: TaskData) -> None:
    assert out.test_pred.shape == (len(task.test),)
    assert out.test_pred.min() >= 0 and out.test_pred.max() < task.num_classes
    assert 0.0 <= out.val_acc <= 1.0
    assert out.trials and 0 < out.trainable_params <= out.total_params


# --- frozen-feature strategies ------------------------------------------------------------------


def feature_problem(seed: int, n_classes: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, size=(n_classes, 10))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % n_classes
        return centres[y] + rng.normal(0, 1.5, size=(n, 10)) + 5.0, y

    return (*draw(60), *draw(60))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probe_picks_the_same_c_as_sklearn(seed: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr, x_va, y_va = feature_problem(seed)
    grid = tuple(np.logspace(-3, 2, 9))
    scaler = StandardScaler().fit(x_tr)
    accs = []
    for c in grid:  # cold fits, one per C: the reference
        model = LogisticRegression(C=c, max_iter=10_000, tol=1e-10)
        model.fit(scaler.transform(x_tr), y_tr)
        accs.append((model.predict(scaler.transform(x_va)) == y_va).mean())
    probe = fit_probe(x_tr, y_tr, x_va, y_va, grid)
    assert probe.c == pytest.approx(grid[int(np.argmax(accs))])
    assert [g["val_acc"] for g in probe.grid] == pytest.approx(accs)


def test_probe_head_reproduces_sklearn_probabilities_binary_and_multiclass() -> None:
    for classes in (2, 4):
        x_tr, y_tr, x_va, y_va = feature_problem(3, classes)
        probe = fit_probe(x_tr, y_tr, x_va, y_va, (0.1, 1.0))
        w, b = probe.head(classes)
        logits = torch.as_tensor(x_va @ w.T + b)
        want = probe.model.predict_proba((x_va - probe.mean) / probe.std)
        np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), want, atol=1e-8)


def frozen_ctx(strategy: str, seed: int, test_shuffle: bool = False, **params: Any) -> CellContext:
    x_tr, y_tr, x_va, y_va = feature_problem(seed)
    x_te, y_te = x_va[::-1].copy(), y_va[::-1].copy()
    if test_shuffle:
        y_te = np.random.default_rng(9).permutation(y_te)
    task = TaskData(
        "f", "image", ["a", "b", "c"], Split(x_tr, y_tr), Split(x_va, y_va), Split(x_te, y_te)
    )
    ctx = context(task, nn.Identity(), strategy, **params)  # type: ignore[arg-type]
    ctx.features = lambda split: task.split(split).inputs  # the features are the inputs
    return ctx


@pytest.mark.parametrize("strategy", ["linear_probe", "knn"])
def test_frozen_selection_ignores_test_labels(strategy: str) -> None:
    a = run(frozen_ctx(strategy, 4), strategy)
    b = run(frozen_ctx(strategy, 4, test_shuffle=True), strategy)
    assert a.hparams == b.hparams and a.val_acc == b.val_acc and a.trials == b.trials
    np.testing.assert_array_equal(a.test_pred, b.test_pred)


def test_knn_picks_k_on_validation() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    ctx = frozen_ctx("knn", 5, k_grid=(1, 3, 7, 15))
    out = run(ctx, "knn")
    x_tr, y_tr = ctx.features("train"), ctx.task.train.labels
    x_va, y_va = ctx.features("val"), ctx.task.val.labels
    accs = [
        (KNeighborsClassifier(k, metric="cosine").fit(x_tr, y_tr).predict(x_va) == y_va).mean()
        for k in (1, 3, 7, 15)
    ]
    assert out.hparams["k"] == (1, 3, 7, 15)[int(np.argmax(accs))]


# --- trainable strategies -----------------------------------------------------------------------


def test_finetune_predicts_test_once_after_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    import atlbench.train as train
    import atlbench.tuning as tuning

    task = image_task()
    calls: list[str] = []
    real_eval, real_run = tuning.predict_logits, tuning.TrainingRun
    monkeypatch.setattr(
        tuning, "predict_logits", lambda *a, **k: calls.append("test") or real_eval(*a, **k)
    )
    monkeypatch.setattr(
        tuning, "TrainingRun", lambda *a, **k: calls.append("run") or real_run(*a, **k)
    )
    seen_val: list[int] = []
    real_val = train.predict_logits
    monkeypatch.setattr(
        train, "predict_logits", lambda m, d, *a: seen_val.append(len(d)) or real_val(m, d, *a)
    )
    out = run(context(task, timm_encoder("test_resnet"), "finetune"), "finetune")
    check_outcome(out, task)
    assert calls == ["run"] * FAST.trials + ["test"]  # full validation: no retrain
    assert set(seen_val) == {len(task.val)}  # the engine only ever evaluates validation
    assert len(out.trials) == FAST.trials
    assert {t["lr"] for t in out.trials} >= {out.hparams["lr"]}
    assert out.val_acc == max(
        t["val_acc"] for t in out.trials if t["rung"] == max(r["rung"] for r in out.trials)
    )
    assert "backbone_lr_mult" in out.hparams  # the backbone rate is searched by default


def trainable_groups(groups: list[dict[str, Any]]) -> list[str]:
    return [g["name"] for g in groups if any(p.requires_grad for p in g["params"])]


def test_gradual_unfreezing_opens_one_group_per_period_from_the_top() -> None:
    model = Classifier(timm_encoder("test_resnet"), 3)
    groups = finetune_groups(model, FinetuneParams(), 1.0)
    backbone = [g["name"] for g in groups if g["name"] != "head"]
    hook = unfreeze_schedule(groups, every=2)
    for epoch in range(2 * len(backbone) + 3):
        hook(epoch)
        top = min(len(backbone), epoch // 2)
        expected = [*backbone[len(backbone) - top :], "head"]
        assert trainable_groups(groups) == expected


def test_gradual_unfreeze_leaves_frozen_groups_untouched() -> None:
    task = image_task()
    encoder = timm_encoder("test_resnet")
    before = {k: v.clone() for k, v in encoder.named_parameters()}
    ctx = context(task, encoder, "gradual_unfreeze", search={"lr": 1e-2}, unfreeze_every=5)
    out = run(ctx, "gradual_unfreeze")
    check_outcome(out, task)
    # Two epochs with unfreeze_every=5: only the head ever trained; the backbone is bit-identical.
    for k, v in encoder.named_parameters():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert out.trainable_params == encoder.feature_dim * 3 + 3


def test_lp_ft_starts_from_the_probe_solution(monkeypatch: pytest.MonkeyPatch) -> None:
    import atlbench.strategies.lpft as lpft

    task = image_task(seed=1)
    ctx = context(task, timm_encoder("test_resnet"), "lp_ft", c_grid=(0.01, 0.1, 1.0))
    heads: list[tuple[np.ndarray, np.ndarray, Any]] = []

    def spy(model: Classifier, probe: Any, num_classes: int) -> None:
        set_head(model, probe, num_classes)  # the head every grid point starts from
        w, b = model.head.weight, model.head.bias
        heads.append((w.detach().numpy().copy(), b.detach().numpy().copy(), probe))

    monkeypatch.setattr(lpft, "set_head", spy)
    out = run(ctx, "lp_ft")
    check_outcome(out, task)
    ((weight, bias, probe),) = heads
    # Independent check: that initial head, on the frozen features, gives sklearn's probabilities.
    x = ctx.features("val")
    probs = torch.softmax(torch.as_tensor(x @ weight.T + bias, dtype=torch.float64), 1).numpy()
    want = probe.model.predict_proba((x - probe.mean) / probe.std)
    np.testing.assert_allclose(probs, want, atol=1e-4)
    assert out.strategy_facts["probe_C"] == probe.c


def lora_expected(backbone: nn.Module, targets: list[str], rank: int) -> int:
    """LoRA adds A (r x in) and B (out x r) per Linear; per Conv2d A is a k x k conv to r."""
    total = 0
    modules = dict(backbone.named_modules())
    for name in targets:
        m = modules[name]
        if isinstance(m, nn.Linear):
            total += rank * (m.in_features + m.out_features)
        else:
            kh, kw = m.kernel_size
            total += rank * m.in_channels * kh * kw + m.out_channels * rank
    return total


@pytest.mark.parametrize(
    ("arch", "rule"), [("test_vit", "attention qkv/proj"), ("test_resnet", "dense Conv2d + Linear")]
)
def test_lora_counts_only_adapters_and_head(arch: str, rule: str) -> None:
    encoder = timm_encoder(arch)
    names_before = {n for n, _ in encoder.named_parameters()}
    targets, got_rule = auto_targets(encoder.model)
    assert got_rule == rule
    if arch == "test_vit":
        assert targets and all(t.endswith(("attn.qkv", "attn.proj")) for t in targets)
    else:
        assert "fc" not in targets  # the source classifier is never adapted
    expected = lora_expected(encoder.model, targets, 4)
    adapted, _, _ = inject_lora(encoder, LoRAParams(rank=4))
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == expected
    assert {n for n, _ in encoder.named_parameters()} == names_before  # the original is untouched

    task = image_task()
    out = run(context(task, encoder, "lora", rank=4), "lora")
    check_outcome(out, task)
    head = encoder.feature_dim * task.num_classes + task.num_classes
    assert out.trainable_params == expected + head
    assert out.strategy_facts["lora_rule"] == rule


@pytest.mark.parametrize("arch", ["test_vit", "test_resnet"])
def test_lora_checkpoint_is_merged_into_the_plain_architecture(arch: str, tmp_path) -> None:
    from safetensors.torch import load_file

    from atlbench.strategies.lora import merged_copy

    encoder = timm_encoder(arch)
    adapted, _, _ = inject_lora(encoder, LoRAParams(rank=4, dropout=0.0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B starts at zero (a no-op adapter); make the adapters do something
        for name, prm in adapted.named_parameters():
            if "lora_B" in name:
                prm.copy_(torch.randn(prm.shape, generator=gen) * 0.05)
    x = torch.randn(3, 3, 32, 32, generator=gen)
    merged = merged_copy(adapted).eval()
    with torch.no_grad():
        expected, got = adapted.eval()(x), merged(x)
        plain = encoder.eval()(x)
    assert not torch.allclose(expected, plain, atol=1e-4)  # the adapters changed the function
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert merged.state_dict().keys() == encoder.state_dict().keys()

    task = image_task()
    ctx = context(task, encoder, "lora", rank=4)
    ctx.checkpoint_dir = tmp_path
    run(ctx, "lora")
    saved = load_file(str(tmp_path / "best.safetensors"))
    assert saved.keys() == encoder.state_dict().keys()  # loads where the source model does


def minilm() -> Encoder:
    from atlbench.sources.hf import HFParams, create_hf

    return create_hf(HFParams(model="sentence-transformers/all-MiniLM-L6-v2"), True)


def test_lora_on_minilm_targets_query_value() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    encoder = minilm()
    sentences = [
        "the striker scored a late goal",
        "a tense match ended in a draw",
        "the keeper saved it",
        "the team won the cup final",
        "stocks fell sharply today",
        "the bank raised rates",
        "markets rallied after the report",
        "investors sold their shares",
        "the new phone has a chip",
        "software update fixes bugs",
        "the laptop battery lasts long",
        "a faster processor ships",
    ]
    y = np.repeat(np.arange(3), 4)
    idx = np.arange(12)
    task = TaskData(
        "t",
        "text",
        ["sport", "money", "tech"],
        Split(sentences, y),
        Split([sentences[i] for i in idx[::2]], y[::2]),
        Split([sentences[i] for i in idx[1::2]], y[1::2]),
    )
    one = FAST.model_copy(update={"max_epochs": 1, "trials": 1})
    ctx = context(task, encoder, "lora", training=one, rank=2)
    targets, rule = auto_targets(encoder.model)
    assert rule == "attention query/value" and len(targets) == 2 * 6  # 6 layers
    out = run(ctx, "lora")
    check_outcome(out, task)
    head = encoder.feature_dim * 3 + 3
    assert out.trainable_params == lora_expected(encoder.model, targets, 2) + head


# --- CORAL on the unlabelled remainder ------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_coral_loss_matches_the_deep_coral_formula(seed: int) -> None:
    from atlbench.strategies.coral import coral_loss

    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(40, 6)), rng.normal(2.0, 3.0, size=(25, 6))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # unbiased, as in the paper
    expected = np.sum((ca - cb) ** 2) / (4 * 6**2)
    got = float(coral_loss(torch.from_numpy(a), torch.from_numpy(b)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(coral_loss(torch.from_numpy(a), torch.from_numpy(a + 5.0))) == pytest.approx(
        0.0, abs=1e-6
    )  # a shift of the mean is not a covariance difference


def test_coral_never_reads_the_unlabelled_labels() -> None:
    task = image_task(n=(12, 4, 4))
    budget = np.concatenate([np.flatnonzero(task.train.labels == c)[:3] for c in range(3)])

    def outcome(labels: np.ndarray) -> CellOutcome:
        shuffled = TaskData(
            task.id,
            task.modality,
            task.class_names,
            Split(task.train.inputs, labels),
            task.val,
            task.test,
        )
        ctx = context(
            shuffled, timm_encoder("test_resnet"), "coral", budget_idx=budget, coral_weight=5.0
        )
        return run(ctx, "coral")

    first = outcome(task.train.labels)
    relabelled = task.train.labels.copy()
    rest = np.setdiff1d(np.arange(len(relabelled)), budget)
    relabelled[rest] = np.random.default_rng(3).permutation(relabelled[rest])
    second = outcome(relabelled)
    check_outcome(first, task)
    assert first.strategy_facts["n_unlabelled"] == len(rest)
    np.testing.assert_array_equal(first.test_pred, second.test_pred)
    assert first.val_acc == second.val_acc


def test_coral_refuses_a_budget_that_leaves_nothing_unlabelled() -> None:
    task = image_task()
    ctx = context(task, timm_encoder("test_resnet"), "coral")
    with pytest.raises(ValueError, match="coral needs at least 4 labelled and 4 unlabelled"):
        run(ctx, "coral")


def test_coral_term_enters_every_training_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from atlbench.strategies import coral

    calls: list[tuple[int, int]] = []
    real = coral.coral_loss

    def counting(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append((a.shape[0], b.shape[0]))
        out = real(a, b)
        assert out.requires_grad  # it must reach the backbone's gradients
        return out

    monkeypatch.setattr(coral, "coral_loss", counting)
    task = image_task(n=(12, 4, 4))
    budget = np.concatenate([np.flatnonzero(task.train.labels == c)[:4] for c in range(3)])
    ctx = context(task, timm_encoder("test_resnet"), "coral", budget_idx=budget, coral_batch=8)
    out = run(ctx, "coral")
    n = len(ctx.budget_idx)
    passes = -(-FAST.min_epoch_samples // n)  # epochs repeat the labelled set to this many samples
    steps_per_epoch = -(-passes * n // FAST.batch_size)
    # one CORAL term per optimiser step of every trial, for every epoch each trial ran
    assert len(calls) == sum(t["epochs"] for t in out.trials) * steps_per_epoch
    assert all(a == 8 and b == 8 for a, b in calls)  # 12 labelled, 24 unlabelled: full batches


def multitask_context(aux: TaskData, checkpoints, **params: Any) -> CellContext:
    task = image_task(n=(12, 4, 4))
    budget = BudgetSpec(per_class=4)
    idx = select_budget(task.train.labels, budget, 0)
    ctx = context(
        task,
        timm_encoder("test_resnet"),
        "multitask",
        budget_idx=idx,
        group=["img", "aux"],
        **params,
    )
    ctx.related = {"aux": aux}
    ctx.budget = budget
    ctx.checkpoint_dir = checkpoints
    return ctx


def encoder_weights(ctx: CellContext) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ctx.checkpoint_dir / "best.safetensors"))


def test_multitask_learns_from_other_labels_but_never_their_eval_splits(tmp_path) -> None:
    aux = image_task(classes=4, seed=5, n=(10, 4, 4))
    first_ctx = multitask_context(aux, tmp_path / "a")
    first = run(first_ctx, "multitask")
    check_outcome(first, first_ctx.task)
    # the other member's validation and test splits are never read: garbage there changes nothing
    junk = image_task(classes=4, seed=99, n=(10, 7, 9))
    blind = TaskData("aux", "image", aux.class_names, aux.train, junk.val, junk.test)
    blind_ctx = multitask_context(blind, tmp_path / "b")
    second = run(blind_ctx, "multitask")
    np.testing.assert_array_equal(first.test_pred, second.test_pred)
    for name, w in encoder_weights(first_ctx).items():
        torch.testing.assert_close(w, encoder_weights(blind_ctx)[name], rtol=0, atol=0)
    # its training labels do reach the shared backbone
    relabelled = Split(aux.train.inputs, np.roll(aux.train.labels, 1))
    moved_ctx = multitask_context(
        TaskData("aux", "image", aux.class_names, relabelled, aux.val, aux.test), tmp_path / "c"
    )
    run(moved_ctx, "multitask")
    assert any(
        not torch.equal(w, encoder_weights(moved_ctx)[name])
        for name, w in encoder_weights(first_ctx).items()
    )
    # trainable parameters: everything fine-tune trains plus one head per other member
    ft_ctx = context(
        first_ctx.task, timm_encoder("test_resnet"), "finetune", budget_idx=first_ctx.budget_idx
    )
    ft = run(ft_ctx, "finetune")
    feature_dim = timm_encoder("test_resnet").feature_dim
    assert first.trainable_params == ft.trainable_params + feature_dim * 4 + 4
    # the same budget for the other member unless asked otherwise
    assert first.strategy_facts["aux_train_sizes"] == {"aux": 4 * 4}
    full = run(multitask_context(aux, tmp_path / "d", aux_budget="full"), "multitask")
    assert full.strategy_facts["aux_train_sizes"] == {"aux": len(aux.train)}


def test_multitask_term_draws_one_batch_per_member_every_step(monkeypatch, tmp_path) -> None:
    from atlbench.strategies import multitask

    calls: list[int] = []
    real = multitask.F.cross_entropy

    def counting(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 4:  # the other member's head (the cell's own task has 3 classes)
            calls.append(len(labels))
            assert logits.requires_grad
        return real(logits, labels)

    monkeypatch.setattr(multitask.F, "cross_entropy", counting)
    ctx = multitask_context(image_task(classes=4, seed=5, n=(10, 4, 4)), None)
    out = run(ctx, "multitask")
    n = len(ctx.budget_idx)
    passes = -(-FAST.min_epoch_samples // n)
    steps_per_epoch = -(-passes * n // FAST.batch_size)
    assert len(calls) == sum(t["epochs"] for t in out.trials) * steps_per_epoch
    assert set(calls) == {FAST.batch_size}  # 16 budgeted examples, batches of 8


# --- fine-tune parameter groups -------------------------------------------------------------------


def resnet_groups_reference(model: Classifier) -> list[set[str]]:
    """test_resnet by hand: stem (conv1, bn1), then layer1..layer4, each one group; parameters
    after the last block (timm's own classifier ``fc``) go with the last group."""
    names = [n for n, _ in model.encoder.named_parameters()]
    stem = {n for n in names if n.split(".")[1] in ("conv1", "bn1")}
    stages = [{n for n in names if n.split(".")[1] == f"layer{k}"} for k in range(1, 5)]
    stages[-1] |= {n for n in names if n.split(".")[1] == "fc"}
    assert stem | set().union(*stages) == set(names)
    return [stem, *stages]


@pytest.mark.parametrize("layers", ["all", "head", 1, 3, 5])
def test_finetune_groups_match_the_architecture(layers: Any) -> None:
    from atlbench.strategies.finetune import FinetuneParams, finetune_groups

    model = Classifier(timm_encoder("test_resnet"), 3)
    reference = resnet_groups_reference(model)
    p = FinetuneParams(layers=layers, layer_decay=0.8)
    groups = finetune_groups(model, p, 0.5)
    by_id = {id(prm): n for n, prm in model.encoder.named_parameters()}
    backbone = [{by_id[id(prm)] for prm in g["params"]} for g in groups[:-1]]
    k = {"all": 5, "head": 0}.get(layers, layers)
    assert backbone == reference[5 - k :]  # the top k groups train, in bottom-up order
    for g, ref_index in zip(groups[:-1], range(5 - k, 5), strict=True):
        assert g["lr_mult"] == pytest.approx(0.5 * 0.8 ** (4 - ref_index))
    assert groups[-1]["name"] == "head" and groups[-1]["lr_mult"] == 1.0
    grouped = {id(prm) for g in groups for prm in g["params"]}
    frozen = {n for n, prm in model.encoder.named_parameters() if id(prm) not in grouped}
    assert frozen == set().union(*reference[: 5 - k])  # left out of every group: frozen


# --- the tuning protocol --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["finetune", "scratch", "lp_ft", "lora", "gradual_unfreeze"])
def test_every_trainable_strategy_gets_the_same_trials(strategy: str) -> None:
    cfg = FAST.model_copy(update={"trials": 3, "max_epochs": 1})
    task = image_task()
    out = run(context(task, timm_encoder("test_resnet"), strategy, training=cfg), strategy)
    assert len(out.trials) == 3
    assert len({t["lr"] for t in out.trials}) == 3  # three distinct points of the space


def test_budgeted_selection_reads_only_budget_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    import atlbench.tuning as tuning

    task = image_task(n=(12, 4, 4))
    budget = select_budget(task.train.labels, BudgetSpec(per_class=5), 0)
    ctx = context(task, timm_encoder("test_resnet"), "finetune", budget_idx=budget, budgeted=True)
    touched: list[np.ndarray] = []
    real_labels = CellContext.labels

    def spy(self: CellContext, idx: np.ndarray) -> np.ndarray:
        touched.append(np.asarray(idx))
        return real_labels(self, idx)

    monkeypatch.setattr(CellContext, "labels", spy)
    sizes: list[tuple[int, Any]] = []
    real_run = tuning.TrainingRun

    def recording(
        model: Any, groups: Any, train: Any, val: Any, cfg: Any, device: Any, **kw: Any
    ) -> Any:
        sizes.append((len(train), None if val is None else len(val), kw["lr"]))
        assert (train.labels >= 0).all() and (val is None or (val.labels >= 0).all())
        return real_run(model, groups, train, val, cfg, device, **kw)

    monkeypatch.setattr(tuning, "TrainingRun", recording)
    out = run(ctx, "finetune")
    sel = ctx.selection
    assert set(np.concatenate(touched)) <= set(budget)  # never a label outside the budget
    assert not set(sel.fit_idx) & set(sel.val_idx)
    assert sorted(np.concatenate([sel.fit_idx, sel.val_idx])) == sorted(budget)
    assert len(sel.val_idx) == 3  # one per class: 20% of 5
    assert (ctx.task.val.labels == -1).all() and (ctx.task.test.labels == -1).all()
    # every trial fits on the fit part and validates on the hold-out; then one retrain on the
    # whole budget, without validation, with the chosen learning rate
    *trials, retrain = sizes
    assert len(trials) == FAST.trials and {t[:2] for t in trials} == {(12, 3)}
    assert retrain[:2] == (15, None) and retrain[2] == out.hparams["lr"]
    chosen = next(t for t in out.trials if t["lr"] == out.hparams["lr"])
    # the selected epoch count, at least the min_epochs burn-in (capped at max_epochs)
    floor = min(FAST.min_epochs, FAST.max_epochs)
    assert out.tuning.retrain_epochs == max(chosen["best_epoch"], floor)


def test_frozen_strategies_cross_validate_inside_the_budget() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x_tr, y_tr, x_va, y_va = feature_problem(7)
    task = TaskData(
        "f", "image", ["a", "b", "c"], Split(x_tr, y_tr), Split(x_va, y_va), Split(x_va, y_va)
    )
    budget = select_budget(y_tr, BudgetSpec(per_class=6), 0)
    grid = (0.01, 0.1, 1.0, 10.0)
    ctx = context(
        task, nn.Identity(), "linear_probe", budget_idx=budget, budgeted=True, c_grid=grid
    )  # type: ignore[arg-type]
    ctx.features = lambda split: task.split(split).inputs
    out = run(ctx, "linear_probe")
    # independent reference: sklearn's own CV over the same folds, on standardised features
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = x_tr[budget], y_tr[budget]
    folds = [(np.setdiff1d(np.arange(len(y)), f), f) for f in ctx.selection.folds]
    means = [
        cross_val_score(
            make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=10_000, tol=1e-10)),
            x,
            y,
            cv=folds,
        ).mean()
        for c in grid
    ]
    assert out.hparams["C"] == grid[int(np.argmax(means))]
    assert [t["val_acc"] for t in out.trials] == pytest.approx(means)


def test_a_run_stopped_by_max_epochs_is_flagged() -> None:
    one = FAST.model_copy(update={"max_epochs": 1, "trials": 1})
    out = run(
        context(image_task(), timm_encoder("test_resnet"), "scratch", training=one), "scratch"
    )
    assert "still improving at max_epochs (1)" in out.tuning.edge_flags
