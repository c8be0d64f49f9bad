"""Old config keys: moved keys go to their new place, retired ones go, each with one line.

Used for user configs and for configs saved inside old checkpoints. To move a key, add
`"old.dotted.key": "new.dotted.key"` to MOVED_KEYS; to retire a value, add it to RETIRED_VALUES.
"""

from dlkit.train.options.parse import plain

# Old key -> its new place; each works for one more release with a message.
MOVED_KEYS = {
    "grad_accum_steps": "step.grad_accum_steps",
    "dp": "step.dp",
    "mixed_precision": "step.mixed_precision",
    "nonfinite": "step.nonfinite",
    "steps_per_call": "parallel.steps_per_call",
    "ensemble_size": "parallel.ensemble_size",
    "init_from": "transfer.init_from",
    "convert": "transfer.convert",
    "init_skip": "transfer.skip",
    "init_rename": "transfer.rename",
    "freeze": "transfer.freeze",
    "backbone_lr_scale": "transfer.backbone_lr_scale",
    "init_vectors": "transfer.vectors",
    "init_vectors_param": "transfer.vectors_param",
    "checkpoint_every_steps": "checkpoint.every_steps",
    "max_checkpoints_to_keep": "checkpoint.max_to_keep",
    "preemption_signals": "checkpoint.preemption_signals",
    "model.fused_lstm": "model.fused",  # two flags for one idea; off if either old one is off
    "model.fused_gru": "model.fused",
}
RETIRED_KEYS = {"parallel.mesh_shape": "nothing reads it"}
# (dotted key, retired value) -> (the value used instead, the message).
RETIRED_VALUES: dict = {}


def _moved_message(old: str, new: str) -> str:
    suffix = ".*" if old == "dp" else ""
    return (
        f"config key {old}{suffix} is deprecated: use {new}{suffix} "
        f"(--config.{new}{suffix}); the old key works for one more release"
    )


def _parent(tree: dict, dotted: str, create: bool = False):
    """(the dict holding dotted's last part or None, that part)."""
    *path, leaf = dotted.split(".")
    for part in path:
        if create and not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return None, leaf
    return tree, leaf


def _move(out: dict, old: str, new: str, merge: bool) -> bool:
    """Moves out[old] to new in place; False when unset (missing or a None placeholder).

    merge: new was set by another old key in this pass (booleans: off if either is off)."""
    parent, leaf = _parent(out, old)
    value = parent.pop(leaf, None) if parent is not None else None
    if isinstance(value, dict):  # dp: its set fields join step.dp's
        value = {k: v for k, v in value.items() if v is not None} or None
    if value is None:
        return False
    parent, leaf = _parent(out, new, create=True)
    if isinstance(value, dict) and isinstance(parent.get(leaf), dict):
        value = {**parent[leaf], **value}
    if merge and isinstance(value, bool) and isinstance(parent.get(leaf), bool):
        value = value and parent[leaf]
    parent[leaf] = value
    return True


def _retire(out: dict) -> list[str]:
    """Drops retired keys and replaces retired values in place; their messages."""
    messages = []
    for dotted, why in RETIRED_KEYS.items():
        parent, leaf = _parent(out, dotted)
        if parent is not None and leaf in parent:
            parent.pop(leaf)
            messages.append(f"config key {dotted} is retired ({why}); it is ignored")
    for (dotted, retired), (instead, message) in RETIRED_VALUES.items():
        parent, leaf = _parent(out, dotted)
        if parent is not None and parent.get(leaf) == retired:
            parent[leaf] = instead
            messages.append(message)
    return messages


def migrate(config) -> tuple[dict, list[str]]:
    """(config as nested plain dicts with old keys moved to their new places, one line per move).

    Pure and idempotent. An old key set to None (an unset placeholder) is dropped silently; a set
    one wins over the new key's value.
    """
    out, moved, targets = plain(config), [], set()
    for old, new in MOVED_KEYS.items():
        if _move(out, old, new, merge=new in targets):
            moved.append(old)
            targets.add(new)
    return out, [_moved_message(old, MOVED_KEYS[old]) for old in moved] + _retire(out)
