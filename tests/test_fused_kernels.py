"""SE's and CBAM's fused Triton kernels against the plain formulas, run on the CPU by Triton's interpreter.

The kernels run in Triton's interpreter, which Triton chooses when it is first imported:
tests/conftest.py sets ``TRITON_INTERPRET=1`` on machines without CUDA before anything imports
it (or start pytest with it set). Where Triton was imported compiled (a machine with CUDA), the
interpreter tests skip and the ``gpu`` test checks the compiled kernels against the eager path.

Forward and every gradient (input, parameters) and the BatchNorm statistics are compared with
the plain formulas of tests/test_fast_blocks.py: in float64 to 1e-10; in float32 and bfloat16,
where both paths round (and sums over a thousand channels round more), the fused path must be
about as far from the float64 formula as the eager path is, with a margin of a few float32
(1e-5 of the largest value) or bfloat16 (2e-2) steps.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from attn_resnet.models import ResidualNet, set_fused
from attn_resnet.models.attention import CBAM, SE, AttentionMap
from attn_resnet.models.attention.fused import FusedKernelError, ops, triton_available, use_fused
from test_fast_blocks import batch_norm_stats, outputs_and_grads, plain_cbam, plain_se, randomize_

INTERPRETER = triton_available() and ops.interpreter_loaded()
needs_interpreter = pytest.mark.skipif(
    not INTERPRETER,
    reason="Triton's interpreter is off: Triton was imported without TRITON_INTERPRET=1 (tests/conftest.py sets it "
           "on machines without CUDA; elsewhere run `TRITON_INTERPRET=1 pytest tests/test_fused_kernels.py`)")

CASES = {
    "SE": (lambda channels: SE(channels, reduction=8), plain_se),
    "CBAM": (lambda channels: CBAM(channels, reduction=8), plain_cbam),
    "CBAM-k3": (lambda channels: CBAM(channels, reduction=4, kernel_size=3), plain_cbam),
}
TIGHT = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}
# (factor, margin): the fused path's error against float64 may be factor x the eager path's + margin,
# both relative to the largest value of each tensor.
ROUNDING = {torch.float32: (2, 1e-5), torch.bfloat16: (3, 2e-2)}
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def make_case(name: str, shape: tuple[int, ...], dtype: torch.dtype, layout: str, seed: int = 0,
              x: torch.Tensor | None = None):
    """A block with non-trivial parameters, its input and an upstream gradient, all in ``dtype`` and ``layout``."""
    make, plain = CASES[name]
    generator = torch.Generator().manual_seed(seed)
    block = make(shape[1]).double()
    randomize_(block, generator)
    if x is None:
        x = torch.randn(shape, generator=generator, dtype=torch.float64)
    upstream = torch.randn(shape, generator=generator, dtype=torch.float64)
    memory_format = LAYOUTS[layout]
    block = block.to(dtype).to(memory_format=memory_format).train()
    return (block, plain, x.to(dtype).contiguous(memory_format=memory_format),
            upstream.to(dtype).contiguous(memory_format=memory_format))


def run(block, x, upstream, forward=None, fused=None):
    """Output, gradients (input and every parameter) and BatchNorm statistics of a copy of ``block``."""
    block = copy.deepcopy(block)
    if fused is not None:
        block.fused = fused
    stats = batch_norm_stats(block)
    if forward is None:
        out, grads = outputs_and_grads(block, block, x, upstream)
        stats = batch_norm_stats(block)  # the block's own, after the step
    else:  # the plain formula moves the copies in ``stats``
        out, grads = outputs_and_grads(lambda inp: forward(block, inp, stats), block, x, upstream)
    return {"output": out, **grads, **{f"{name}.running_{kind}": value for name, pair in stats.items()
                                       for kind, value in zip(("mean", "var"), pair)}}


def relative_errors(got: dict, truth: dict) -> dict[str, float]:
    return {key: ((got[key].double() - truth[key].double()).abs().max()
                  / truth[key].double().abs().max().clamp_min(1e-12)).item() for key in truth}


def check_fused_equals_plain(name, shape, dtype, layout, x=None):
    block, plain, x, upstream = make_case(name, shape, dtype, layout, x=x)
    fused = run(block, x, upstream, fused=True)
    if dtype == torch.float64:
        expected = run(block, x, upstream, forward=plain)
        for key in expected:
            torch.testing.assert_close(fused[key], expected[key], **TIGHT[dtype], msg=lambda m: f"{key}: {m}")
    else:  # both paths round: measured against float64 and the eager path's own error
        truth = run(copy.deepcopy(block).double(), x.double(), upstream.double(), forward=plain)
        fused_errors = relative_errors(fused, truth)
        eager_errors = relative_errors(run(block, x, upstream, fused=False), truth)
        factor, margin = ROUNDING[dtype]
        for key in truth:
            # Small sums that cancel (a bias's gradient) round differently on each path.
            assert fused_errors[key] <= factor * eager_errors[key] + margin, (key, fused_errors[key],
                                                                              eager_errors[key])
    assert fused["output"].dtype == dtype
    assert fused["output"].is_contiguous(memory_format=LAYOUTS[layout]), "the fused path changed the layout"
    return fused


@needs_interpreter
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(1, 24, 5, 7), (3, 40, 7, 5)], ids=["1x24x5x7", "3x40x7x5"])
@pytest.mark.parametrize("name", ["SE", "CBAM"])
def test_fused_block_equals_the_plain_formula(name, shape, dtype, layout):
    check_fused_equals_plain(name, shape, dtype, layout)


@needs_interpreter
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fused_cbam_takes_its_options(layout):
    check_fused_equals_plain("CBAM-k3", (2, 24, 6, 6), torch.float32, layout)


@needs_interpreter
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("values", ["three_levels", "constant"])
def test_max_ties_send_the_gradient_where_the_eager_path_does(values, layout):
    # The first maximum takes a max's gradient, as max_pool2d and torch.max: the lowest pixel index
    # h * W + w, the lowest channel. 80 channels on 17x19 pixels span several tiles both ways, so
    # ties also fall across tile boundaries.
    shape = (2, 80, 17, 19)
    generator = torch.Generator().manual_seed(3)
    x = (torch.randint(-1, 2, shape, generator=generator).double() if values == "three_levels"
         else torch.full(shape, 0.25, dtype=torch.float64))
    fused = check_fused_equals_plain("CBAM", shape, torch.float64, layout, x=x)
    assert torch.isfinite(fused["input"]).all()


@needs_interpreter
def test_a_broadcast_gradient_and_a_frozen_input_work():
    block, _, x, _ = make_case("CBAM", (2, 24, 5, 5), torch.float32, "contiguous")
    eager, fused = copy.deepcopy(block), copy.deepcopy(block)
    fused.fused = True
    # y.sum().backward() hands the block an expanded (stride 0) gradient.
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    for module, inp in zip((eager, fused), xs):
        module(inp).sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, **TIGHT[torch.float32])
    # An input that needs no gradient (a frozen trunk): only the block's parameters get one.
    for module in (eager, fused):
        module.zero_grad()
        module(x).square().sum().backward()
    for (key, a), b in zip(eager.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, **TIGHT[torch.float32], msg=lambda m: f"{key}: {m}")


@needs_interpreter
@pytest.mark.parametrize("name", ["SE", "CBAM"])
def test_inference_and_bf16_autocast_match_the_eager_path(name):
    block, _, x, _ = make_case(name, (2, 24, 6, 5), torch.float32, "channels_last")
    block.eval()
    fused = copy.deepcopy(block)
    fused.fused = True
    with torch.no_grad():
        torch.testing.assert_close(fused(x), block(x), **TIGHT[torch.float32])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = block(x), fused(x)
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)


@needs_interpreter
@pytest.mark.parametrize("name", ["SE", "CBAM"])
def test_the_taps_see_the_eager_paths_attention_maps(name):
    block, _, x, _ = make_case(name, (2, 24, 5, 6), torch.float32, "contiguous")
    seen = {}
    for fused in (False, True):
        model = copy.deepcopy(block)
        model.fused = fused
        maps = seen[fused] = []
        for module in model.modules():
            if isinstance(module, AttentionMap):
                module.register_forward_hook(lambda module, inputs, output, maps=maps: maps.append(output.detach()))
        model(x)
    assert len(seen[True]) == len(seen[False]) == (1 if name == "SE" else 2)
    for got, expected in zip(seen[True], seen[False]):
        torch.testing.assert_close(got, expected, **TIGHT[torch.float32])


@needs_interpreter
def test_a_fused_resnet_trains_like_the_eager_one():
    # float64: a train-mode BatchNorm over a batch of two 1x1 maps (the last stage here) magnifies
    # float32 rounding beyond any tolerance (and float64 rounding to about 1e-7): compare in float64.
    torch.manual_seed(0)
    eager = ResidualNet("CIFAR10", 18, 10, "CBAM", fused=False).double().train()
    fused = set_fused(copy.deepcopy(eager), True)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    outputs = []
    for model in (eager, fused):
        out = model(x)
        out.square().sum().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1], outputs[0], **TIGHT[torch.float64])
    for (key, a), b in zip(eager.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-8, msg=lambda m: f"{key}: {m}")


def test_fused_false_is_the_eager_path_bit_for_bit():
    block, _, x, upstream = make_case("CBAM", (2, 24, 5, 7), torch.float32, "contiguous")
    off = run(block, x, upstream, fused=False)
    reference = copy.deepcopy(block)
    eager = run(reference, x, upstream,
                forward=lambda module, inp, stats: module.spatial_gate(module.channel_gate(inp)))
    for key in off:
        if "running" not in key:  # the plain forward's statistics are copies, not the block's
            assert torch.equal(off[key], eager[key]), key
    torch.manual_seed(0)
    model = ResidualNet("CIFAR10", 18, 10, "SE", fused=False).eval()
    auto = set_fused(copy.deepcopy(model), "auto")  # on the CPU: the eager path
    images = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(images), auto(images))


def test_fused_true_on_the_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    block = CBAM(24, reduction=8)
    block.fused = True
    monkeypatch.setattr(ops, "interpreter_loaded", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not triton_available():
        pytest.skip("Triton is not installed: the error names Triton instead")
    with pytest.raises(FusedKernelError, match=r"TRITON_INTERPRET=1.*fused='auto'") as raised:
        block(torch.randn(1, 24, 3, 3))
    assert "imported before" not in str(raised.value)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # set, but after Triton was imported
    with pytest.raises(FusedKernelError, match="imported before it was set"):
        block(torch.randn(1, 24, 3, 3))


def test_when_each_mode_fuses(monkeypatch):
    x = torch.randn(1, 24, 3, 3)
    assert not use_fused("auto", x) and not use_fused(False, x)
    assert not use_fused(True, torch.empty(1, 24, 3, 3, device="meta"))  # shapes only: the eager path
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not use_fused(True, x)  # torch.compile sees the eager formula
    with pytest.raises(ValueError, match="fused='yes' is not a choice"):
        ResidualNet("CIFAR10", 18, 10, "CBAM", fused="yes")


@pytest.mark.parametrize("att_type", ["SE", "CBAM"])
def test_state_dict_does_not_depend_on_fused(att_type):
    torch.manual_seed(0)
    models = {mode: ResidualNet("ImageNet", 50, 10, att_type, fused=mode) for mode in ("auto", True, False)}
    shapes = {mode: {key: tuple(value.shape) for key, value in model.state_dict().items()}
              for mode, model in models.items()}
    assert shapes["auto"] == shapes[True] == shapes[False]
    models[True].load_state_dict(models[False].state_dict())  # strict: checkpoints are interchangeable


def test_model_fused_is_an_execution_key_and_validated():
    from helpers import compose_train

    from attn_resnet.build import model_spec
    from attn_resnet.config.resume import trajectory_changes
    from attn_resnet.config.validate import ConfigError, validate_train_config

    for value in ("auto", "true", "false"):
        validate_train_config(compose_train([f"model.fused={value}", "model.att_type=CBAM"]))
    for value in ("fast", "1", "yes"):
        with pytest.raises(ConfigError, match=r"model\.fused=.*Valid choices: auto, true, false"):
            validate_train_config(compose_train([f"model.fused={value}"]))
    cfg = compose_train(["model.fused=true", "model.att_type=SE"])
    spec = model_spec(cfg.model, "CIFAR10", 10)
    assert "fused" not in spec  # the checkpoints' model spec: a resumed or evaluated run may run either way
    saved = {"model": {"depth": 18, "att_type": "SE"}}  # an older run's config, without the key
    assert trajectory_changes(saved, {"model": {"depth": 18, "att_type": "SE", "fused": True}}) == {}


class FullSizeTraffic(TorchDispatchMode):
    """Counts the reads and writes of tensors of ``numel`` elements by the ATen ops run inside it (views left out)."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.ops = numel, []

    def _full(self, tensor) -> bool:
        # A broadcast (expanded) view of a small tensor reads little: only tensors backed by a full-size storage count.
        return (isinstance(tensor, torch.Tensor) and tensor.numel() == self.numel
                and tensor.untyped_storage().nbytes() >= self.numel * tensor.element_size())

    # Allocations move no data, nor does Triton's interpreter when it wraps a tensor's storage.
    NO_TRAFFIC = ("aten.empty", "aten.new_empty", "aten.empty_like", "aten.empty_strided", "aten.set_")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if str(func).startswith(self.NO_TRAFFIC):
            return out
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        storages = {t.untyped_storage().data_ptr() for t in inputs}
        aliases = [t.untyped_storage().data_ptr() in storages for t in outputs]
        if outputs and all(aliases) and not func._schema.is_mutable:
            return out  # a view
        reads = sum(map(self._full, inputs))
        writes = sum(self._full(t) and (not alias or func._schema.is_mutable) for t, alias in zip(outputs, aliases))
        if reads or writes:
            self.ops.append((str(func), reads + writes))
        return out


def full_size_traffic(block: torch.nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """Full-size reads + writes of a train step's forward and backward (the input's gradient, not its accumulation)."""
    x = torch.randn(shape, requires_grad=True)
    upstream = torch.randn(shape)
    with FullSizeTraffic(x.numel()) as forward:
        out = block(x)
    with FullSizeTraffic(x.numel()) as backward:
        torch.autograd.grad(out, [x, *block.parameters()], upstream)
    return sum(n for _, n in forward.ops), sum(n for _, n in backward.ops)


@needs_interpreter
@pytest.mark.parametrize("name", ["SE", "CBAM"])
def test_the_fused_path_makes_no_full_size_aten_pass(name, monkeypatch):
    # The fused path's only full-size passes are its kernels (listed in the fused package's
    # docstring); the eager path's count there is this measure of the eager block.
    shape = (2, 24, 5, 7)
    block = CASES[name][0](24)
    launched = []
    launch = ops._launch
    monkeypatch.setattr(ops, "_launch", lambda kernel, *args, **kwargs: (launched.append(kernel),
                                                                        launch(kernel, *args, **kwargs)))
    eager = full_size_traffic(block, shape)
    block.fused = True
    assert full_size_traffic(block, shape) == (0, 0)
    expected = {"SE": ["reduce_pixels_kernel", "apply_gates_kernel", "reduce_pixels_kernel", "input_grad_kernel"],
                "CBAM": ["reduce_pixels_kernel", "channel_stats_kernel", "apply_gates_kernel",
                         "cbam_backward_reduce_kernel", "reduce_pixels_kernel", "input_grad_kernel"]}[name]
    assert launched == expected
    fused = {"SE": (3, 4), "CBAM": (4, 5)}[name]  # reads + writes of the kernels above
    assert eager[0] >= fused[0] and eager[1] > fused[1], eager


@needs_interpreter
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["SE", "CBAM"])
def test_fused_block_at_every_resnet50_stage_width(name, layout, dtype):
    # ResNet-50's four stage widths (and 64, ResNet-18's first), at reduced maps with odd sides.
    for channels, side in ((64, 9), (256, 11), (512, 7), (1024, 5), (2048, 3)):
        check_fused_equals_plain(name, (2, channels, side, side + 2), dtype, layout)


@needs_interpreter
@pytest.mark.slow
@pytest.mark.parametrize("att_type", ["SE", "CBAM"])
def test_a_fused_resnet50_step_equals_the_eager_one(att_type):
    # float64, channels_last, as test_a_fused_resnet_trains_like_the_eager_one (train-mode BatchNorm
    # over 2x2 maps of a batch of two magnifies rounding).
    torch.manual_seed(0)
    eager = ResidualNet("ImageNet", 50, 10, att_type, fused=False).double().train()
    eager = eager.to(memory_format=torch.channels_last)
    fused = set_fused(copy.deepcopy(eager), True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    results = []
    for model in (eager, fused):
        out = model(x)
        out.square().sum().backward()
        results.append((out, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], **TIGHT[torch.float64])
    for (key, _), a, b in zip(eager.named_parameters(), results[0][1], results[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-8, msg=lambda m: f"{key}: {m}")


@needs_interpreter
@pytest.mark.slow
def test_fused_blocks_compile_to_the_eager_numbers():
    # Under torch.compile the blocks take the eager formula: the kernels are not traced.
    block, _, x, _ = make_case("CBAM", (2, 24, 5, 6), torch.float32, "contiguous")
    block.eval().fused = True
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x), rtol=1e-4, atol=1e-5)


# Run in a child without the interpreter: every launch that SE and CBAM make (forward and backward,
# bfloat16 and float32, both layouts) is recorded instead of run, and compiled by Triton for an
# H100/H200 (sm_90) with the bundled ptxas, no GPU needed. The kernels produce nothing here, so
# the values that flow between them are garbage; only the launches' types matter.
COMPILE_FOR_GPU = """
import sys
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile

from attn_resnet.models.attention import CBAM, SE
from attn_resnet.models.attention.fused import gates, kernels, ops

POINTERS = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float64: "*fp64", torch.int32: "*i32"}
launches = {}


def record(name, grid, device, *args, **constants):
    fn = triton.JITFunction(getattr(kernels, name))
    names = [arg for arg in fn.arg_names if arg not in constants]
    signature = {arg: POINTERS[value.dtype] if isinstance(value, torch.Tensor) else
                 "fp32" if isinstance(value, float) else "i32" for arg, value in zip(names, args)}
    signature.update({arg: "constexpr" for arg in constants})
    key = (name, tuple(sorted(signature.items())), tuple(sorted(map(str, constants.items()))))
    launches[key] = (fn, signature, constants)


ops._launch = record
for dtype in (torch.float32, torch.bfloat16):
    for layout in (torch.contiguous_format, torch.channels_last):
        for block, run in ((SE(40, 8), gates.se_gate), (CBAM(40, 8), gates.cbam_gates)):
            block = block.to(dtype)
            x = torch.randn(2, 40, 7, 5, dtype=dtype).contiguous(memory_format=layout).requires_grad_()
            run(x, block).sum().backward()
target = GPUTarget("cuda", 90, 32)
for fn, signature, constants in launches.values():
    compiled = compile(ASTSource(fn, signature, constexprs=constants), target=target)
    assert compiled.asm["cubin"], fn.__name__
print(len(launches), sorted({key[0] for key in launches}))
"""


def test_every_launch_compiles_for_the_gpu(tmp_path):
    # The interpreter runs NumPy, not Triton's compiler: this catches what only compiling would.
    import subprocess
    import sys

    from helpers import REPO, launch_env

    pytest.importorskip("triton.compiler")
    env = {**launch_env(), "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", COMPILE_FOR_GPU], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "input_grad_kernel" in result.stdout and "channel_stats_kernel" in result.stdout


def run_fused_benchmark(folder, interpret: bool):
    """scripts/benchmark.py's fused section at toy sizes on the CPU; its JSON and Markdown reports."""
    import json
    import subprocess
    import sys

    from helpers import REPO, launch_env

    env = {**launch_env(), "TRITON_INTERPRET": "1" if interpret else "0"}
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--quick", "--device", "cpu", "--threads", "1",
                             "--sections", "fused", "--output-md", str(folder / "bench.md"),
                             "--output-json", str(folder / "bench.json")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((folder / "bench.json").read_text()), (folder / "bench.md").read_text()


def test_benchmark_fused_section_says_why_it_is_skipped_without_the_interpreter(tmp_path):
    report, text = run_fused_benchmark(tmp_path, interpret=False)
    assert "TRITON_INTERPRET=1" in report["fused"]["skipped"]
    assert report["ratios"]["fused"] == [] and "## Fused kernels (model.fused)" in text and "Skipped:" in text


@pytest.mark.slow
def test_benchmark_fused_section_times_every_contender_at_toy_sizes(tmp_path):
    # 12-22 s: ResNet-18 at 32x32, batch 4, the kernels interpreted.
    import statistics

    report, text = run_fused_benchmark(tmp_path, interpret=True)
    fused = report["fused"]
    assert fused["depth"] == report["settings"]["fused_depth"] == 18
    assert set(fused["contenders"]) == {"none", "SE/fused=false", "SE/fused=true", "CBAM/fused=false",
                                        "CBAM/fused=true"}
    for record in fused["contenders"].values():
        assert len(record["step_seconds"]) == report["settings"]["repeats"]
        assert record["median_step_seconds"] == statistics.median(record["step_seconds"])
    rows = {(row["att_type"], row["fused"]): row for row in report["ratios"]["fused"]}
    assert set(rows) == {("SE", False), ("SE", True), ("CBAM", False), ("CBAM", True)}
    assert all(("speedup" in row) == row["fused"] for row in rows.values())
    assert "| CBAM | true |" in text and "speedup" in text and "their times measure nothing" in text
    # Interpreted kernels measure nothing: no target is checked against them.
    assert not any("model.fused" in row["check"] for row in report["headline"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("att_type", ["SE", "CBAM"])
def test_fused_equals_eager_in_resnet50_blocks_on_cuda(att_type, dtype):
    if ops.interpreter_loaded():
        pytest.skip("Triton was imported for its interpreter (TRITON_INTERPRET=1): the GPU test needs compiled kernels")
    torch.manual_seed(0)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    model = ResidualNet("ImageNet", 50, 1000, att_type, fused=False)
    for stage, side in ((model.layer1, 56), (model.layer2, 28), (model.layer3, 14), (model.layer4, 7)):
        block = stage[1].attn.cuda().to(dtype).to(memory_format=torch.channels_last).train()
        randomize_(block, torch.Generator().manual_seed(side))
        x = torch.randn(16, block_channels(block), side, side, device="cuda", dtype=dtype)
        upstream = torch.randn_like(x)
        for layout in LAYOUTS.values():
            x, upstream = x.contiguous(memory_format=layout), upstream.contiguous(memory_format=layout)
            expected = run(block, x, upstream, fused=False)
            got = run(block, x, upstream, fused=True)
            for key in expected:
                scale = expected[key].abs().max().clamp_min(1e-6)
                torch.testing.assert_close(got[key] / scale, expected[key] / scale, **tolerance,
                                           msg=lambda m: f"{att_type} {side}x{side} {key}: {m}")


def block_channels(block) -> int:
    return block.fc2.out_features if isinstance(block, SE) else block.channel_gate.mlp[2].out_features

