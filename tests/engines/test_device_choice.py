"""--device auto|cpu|cuda|mps: the decision on every kind of machine (a pure function of its facts),
the backend and ONNX Runtime choices that follow it, and the Apple GPU's CPU fallback switch."""
from __future__ import annotations

import pytest

from engines.backend_onnx import CPU_PROVIDER, CUDA_PROVIDER, choose_providers
from engines.device import DEVICE_CHOICES, DeviceFacts, choose_device, resolve_device, wants_cuda
from engines.mps import MPS_FALLBACK_ENV, describe_fallback, enable_mps_fallback
from engines.select import MachineFacts, choose_backend

LINUX_GPU = DeviceFacts.from_platform("Linux", cuda_available=True, mps_available=False)
LINUX_CPU = DeviceFacts.from_platform("Linux", cuda_available=False, mps_available=False)
MAC_M = DeviceFacts.from_platform("Darwin", cuda_available=False, mps_available=True)
MAC_INTEL = DeviceFacts.from_platform("Darwin", cuda_available=False, mps_available=False)


@pytest.mark.parametrize("facts,auto", [(LINUX_GPU, "cuda"), (LINUX_CPU, "cpu"), (MAC_M, "mps"),
                                        (MAC_INTEL, "cpu")], ids=["linux-gpu", "linux-cpu", "mac-apple", "mac-intel"])
def test_auto_picks_cuda_then_the_apple_gpu_then_the_cpu(facts: DeviceFacts, auto: str) -> None:
    assert choose_device("auto", facts) == auto
    assert choose_device("cpu", facts) == "cpu"


def test_mps_counts_only_on_macos() -> None:
    """A torch that claims MPS off macOS is not believed: auto stays on the CPU."""
    odd = DeviceFacts.from_platform("Linux", cuda_available=False, mps_available=True)
    assert not odd.mps and choose_device("auto", odd) == "cpu"


def test_explicit_devices_and_impossible_ones() -> None:
    assert choose_device("cuda", LINUX_GPU) == "cuda" and choose_device("cuda:1", LINUX_GPU) == "cuda:1"
    assert choose_device("mps", MAC_M) == "mps"
    with pytest.raises(ValueError, match="--device cuda: no CUDA GPU.*--device cpu"):
        choose_device("cuda", MAC_M)
    with pytest.raises(ValueError, match="--device mps: no Apple GPU.*--device cpu"):
        choose_device("mps", LINUX_GPU)
    with pytest.raises(ValueError, match="--device mps"):
        choose_device("mps", MAC_INTEL)
    for bad in ("gpu", "cuda:x", "metal"):
        with pytest.raises(ValueError, match="unknown device"):
            choose_device(bad, LINUX_GPU)
    assert "mps" in DEVICE_CHOICES


def test_wants_cuda_is_the_one_gpu_test() -> None:
    assert wants_cuda("auto", True) and wants_cuda("cuda:0", True)
    assert not wants_cuda("auto", False) and not wants_cuda("cpu", True) and not wants_cuda("mps", True)


def test_this_machine_resolves() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto", LINUX_CPU).type == "cpu"


def test_backend_choice_follows_the_device_choice() -> None:
    mac = MachineFacts(cuda=False, tensorrt=False, engines_built=False, onnxruntime_cuda=False, mps=True)
    c = choose_backend("auto", "auto", mac)
    assert (c.kind, c.device, c.precision) == ("torch", "mps", "fp32") and "run on the CPU" in c.reason
    assert choose_backend("auto", "cpu", mac).device == "cpu"                  # --device cpu wins
    assert choose_backend("onnxruntime", "mps", mac).device == "cpu"           # no MPS provider
    with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
        choose_backend("tensorrt", "auto", mac)
    linux = MachineFacts(cuda=False, tensorrt=False, engines_built=False, onnxruntime_cuda=False)
    with pytest.raises(ValueError, match="--device mps"):
        choose_backend("torch", "mps", linux)


def test_onnx_runtime_providers_follow_the_device_choice() -> None:
    with_cuda = [CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers("mps", with_cuda) == [CPU_PROVIDER]
    assert choose_providers("cuda:0", with_cuda) == [CUDA_PROVIDER, CPU_PROVIDER]
    with pytest.raises(ValueError, match="unknown device"):
        choose_providers("metal", with_cuda)


def test_mps_fallback_is_switched_on_on_macos_only_and_respects_the_user() -> None:
    env: dict[str, str] = {}
    assert enable_mps_fallback(env, "Darwin") and env == {MPS_FALLBACK_ENV: "1"}
    assert "run on the CPU" in describe_fallback(env)
    env = {}
    assert not enable_mps_fallback(env, "Linux") and env == {}
    env = {MPS_FALLBACK_ENV: "0"}
    assert not enable_mps_fallback(env, "Darwin") and env[MPS_FALLBACK_ENV] == "0"
    assert "stops with an error" in describe_fallback(env)
