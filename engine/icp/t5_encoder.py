"""The PixArt T5 text encoder run safely: whole on a device when it fits, else block by block on the CPU.

The weights are read only from safetensors (the PixArt repo ships text_encoder/ as sharded
safetensors with model.safetensors.index.json); a folder holding only a pickled .bin is refused.
"Streamed" builds T5EncoderModel on the meta device and lets accelerate's offload hooks load each
T5 block's tensors from the memory-mapped shards just before the block runs and drop them after
(the token embedding and the final norm likewise), so the peak is about one block (T5-XXL: 193 M
parameters, 0.77 GB in fp32; its token embedding 0.53 GB) instead of the whole 4.76 B (19 GB);
scripts/measure_t5_streaming.py measures it. The forward itself is the library's own (T5Stack.forward: the
bidirectional mask, block 0's relative position bias handed to the later blocks), so the result is
the library's to float precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.core.errors import ModelError
from engine.core.events import EventSink, Progress, ignore
from engine.io.weight_files import REPAIR_HINT, check_safetensors, read_config, require_model_file

if TYPE_CHECKING:  # torch loads only when T5 runs (this module stays light)
    import torch

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
STAGE = "text encoder (T5)"  # Progress stage of a streamed pass, one step per block
COLLECT_BYTES = 1 << 28  # a T5 this large is garbage-collected at once after use
_LOADS = [0]  # T5 weight loads in this process (whole or streamed): encoder_loads()


def loads() -> int:
    """How many times T5 weights were loaded in this process."""
    return _LOADS[0]


def weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors shard holding it, each shard's header checked; a folder with
    only pickled weights, an index naming a file outside the folder or a missing shard is a ModelError."""
    folder = Path(folder)
    index_path, single = folder / INDEX_FILE, folder / SINGLE_FILE
    if index_path.is_file():
        index = read_config(index_path, "the T5 weights index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelError(f"{index_path}: no weight_map in the T5 weights index; {REPAIR_HINT}")
        shards = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
                raise ModelError(f"{index_path}: tensor {name!r} points to {shard!r}, not a safetensors file beside "
                                 f"the index; {REPAIR_HINT}")
            shards[name] = folder / shard
    elif single.is_file():
        shards = None
    else:
        pickled = sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []
        found = f" (found {', '.join(pickled)}: pickled weights are not loaded for T5)" if pickled else ""
        raise ModelError(f"{folder}: the T5 text encoder weights must be safetensors ({INDEX_FILE} + shards, or "
                         f"{SINGLE_FILE}){found}; official models: fetch them with `colorflow models download`")
    from safetensors import safe_open

    files = sorted(set(shards.values())) if shards else [single]
    for path in files:
        check_safetensors(require_model_file(path, "a T5 weights shard"))
    if shards is None:
        with safe_open(single, framework="pt") as handle:
            shards = {name: single for name in handle.keys()}
    return shards


def tensor_shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the shards' headers (nothing read but the headers)."""
    from safetensors import safe_open

    shapes = {}
    for path in sorted(set(files.values())):
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                if files.get(name) == path:
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
    missing = sorted(set(files) - set(shapes))
    if missing:
        raise ModelError(f"{files[missing[0]]}: lacks {', '.join(missing[:3])} that the index puts there; {REPAIR_HINT}")
    return shapes


def read_t5_config(folder: Path):
    """T5Config of text_encoder/config.json, read as JSON first (one ModelError line if damaged)."""
    from transformers import T5Config

    path = Path(folder) / "config.json"
    data = read_config(path, "the config file of the T5 text encoder")
    try:
        config = T5Config.from_dict(data)
    except Exception as exc:  # transformers raises several types for bad values
        raise ModelError(f"{path}: not a T5 config ({type(exc).__name__}: {exc}); {REPAIR_HINT}") from exc
    if not (isinstance(config.d_model, int) and isinstance(config.num_layers, int) and isinstance(config.vocab_size, int)):
        raise ModelError(f"{path}: d_model, num_layers and vocab_size must be numbers; {REPAIR_HINT}")
    return config


def weights_bytes(folder: Path, dtype: torch.dtype) -> int:
    """Bytes of the T5 weights once loaded in `dtype` (from the shards' headers)."""
    import torch

    count = 0
    for shape in tensor_shapes(weight_files(folder)).values():
        numel = 1
        for dim in shape:
            numel *= dim
        count += numel
    return count * torch.empty((), dtype=dtype).element_size()


def fits(device: torch.device | str, need: int) -> bool:
    """Whether T5 of `need` bytes can be loaded whole for `device`: free VRAM on CUDA (and host
    memory to load through), available memory elsewhere, with headroom for the activations and
    for the copy transformers makes while converting the stored dtype."""
    import torch

    import psutil

    device = torch.device(device)
    available = psutil.virtual_memory().available
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return need * 1.1 + (1 << 30) <= free and need * 1.2 <= available
    return need * 1.5 + (1 << 30) <= available


def encode_whole(folder: Path, ids: torch.Tensor, mask: torch.Tensor, device: torch.device | str,
                 dtype: torch.dtype) -> torch.Tensor:
    """T5EncoderModel.from_pretrained on `device` in `dtype` (transformers keeps T5's `wo` in fp32
    under fp16, as for the official app), last hidden states of (ids, mask); then freed."""
    import torch

    from transformers import T5EncoderModel

    from engine.io.checkpoints import load_pretrained

    folder = Path(folder)
    weight_files(folder)  # safetensors only, every shard's header checked
    weights = INDEX_FILE if (folder / INDEX_FILE).is_file() else SINGLE_FILE
    _LOADS[0] += 1
    model = load_pretrained(T5EncoderModel, folder, "the T5 text encoder", weights, use_safetensors=True, dtype=dtype)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) >= COLLECT_BYTES
    try:
        model.requires_grad_(False).eval().to(device)
        with torch.no_grad():
            return model(ids.to(device), attention_mask=mask.to(device))[0]
    finally:
        del model
        if large:  # a full collection costs ~0.5 s once the libraries are imported: only for real sizes
            import gc

            gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()


def _sources(model, files: dict[str, Path], shapes: dict[str, tuple[int, ...]], folder: Path) -> dict[str, dict]:
    """accelerate's offload index: each model tensor -> its shard and name there (a tied copy, such as
    encoder.embed_tokens of shared, read from the name the file has); strict on names and shapes."""
    by_tensor: dict[int, list[str]] = {}
    named = list(model.named_parameters(remove_duplicate=False))
    for name, parameter in named:
        by_tensor.setdefault(id(parameter), []).append(name)
    tied = getattr(model, "_tied_weights_keys", None)  # {copy: source} in transformers 5
    aliases = {name: [name, *(tied.get(name, ()) if isinstance(tied, dict) else ())] for name, _ in named}
    index, missing, mismatched = {}, [], []
    for name, parameter in named:
        candidates = [*by_tensor[id(parameter)], *aliases[name][1:]]
        stored = next((alias for alias in candidates if alias in files), None)
        if stored is None:
            missing.append(name)
        elif shapes[stored] != tuple(parameter.shape):
            mismatched.append(f"{stored} file {list(shapes[stored])} vs model {list(parameter.shape)}")
        else:
            index[name] = {"safetensors_file": str(files[stored]), "weight_name": stored}
    if missing or mismatched:
        what = "; ".join(filter(None, [f"missing key(s): {', '.join(missing[:8])}" if missing else "",
                                       f"mis-shaped: {', '.join(mismatched[:8])}" if mismatched else ""]))
        raise ModelError(f"{folder}: the T5 weights do not match config.json: {what}; {REPAIR_HINT}")
    return index


def encode_streamed(folder: Path, ids: torch.Tensor, mask: torch.Tensor, *, emit: EventSink = ignore,
                    on_block: Callable[[int, torch.nn.Module], None] | None = None) -> torch.Tensor:
    """The last hidden states of (ids, mask) in fp32 on the CPU, T5 built on the meta device and each
    block's weights read from the shards just before it runs and dropped after. `on_block(i, model)`
    is called once block i's weights are in (tests watch the memory with it)."""
    import torch

    from accelerate import init_empty_weights
    from accelerate.hooks import ModelHook, add_hook_to_module, attach_align_device_hook, remove_hook_from_module
    from accelerate.utils import OffloadedWeightsLoader
    from transformers import T5EncoderModel

    folder = Path(folder)
    config = read_t5_config(folder)
    files = weight_files(folder)
    shapes = tensor_shapes(files)
    with init_empty_weights():
        model = T5EncoderModel(config)
    model.tie_weights()  # encoder.embed_tokens is shared (the files hold shared.weight only)
    model.requires_grad_(False).eval()
    loader = OffloadedWeightsLoader(index=_sources(model, files, shapes, folder))
    blocks = model.encoder.block

    class Watch(ModelHook):
        """After the offload hook of block `index` loaded it: tell the watcher; after it ran: progress."""

        def __init__(self, index: int) -> None:
            self.index = index

        def pre_forward(self, module, *args, **kwargs):
            if on_block is not None:
                on_block(self.index, model)
            return args, kwargs

        def post_forward(self, module, output):
            emit(Progress(STAGE, self.index + 1, len(blocks)))
            return output

    _LOADS[0] += 1
    attach_align_device_hook(model, execution_device=torch.device("cpu"), offload=True, weights_map=loader,
                             preload_module_classes=[type(blocks[0]).__name__])
    for index, block in enumerate(blocks):
        add_hook_to_module(block, Watch(index), append=True)
    try:
        with torch.no_grad():
            return model(ids.cpu(), attention_mask=mask.cpu())[0]
    finally:
        remove_hook_from_module(model, recurse=True)  # the hooks hold the model: nothing left after this
