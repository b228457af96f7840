"""The catalogue: every RPC function a dbworker client can call, with Cinder's signatures.

``SEED`` is ``cinder.db.api`` at Folsom (the 90 functions of ``shared/seeds/cinder-db-api.txt``),
``EXTRA`` the functions dbworker adds (contract §3). Signatures omit the leading ``context``.
``dbworker.client`` and the in-process API generate their functions from this table, so a
function exists for callers even before the worker serves it (then the call fails with
``NoSuchMethod``). :data:`REPLIES` says what each returns, so replies are decoded by shape.
Imports nothing but the standard library and :mod:`dbworker.wire`.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass

from dbworker import wire

#: RPC API version served. History (a new function or optional argument bumps the minor):
#:   1.0 - Cinder's Folsom DB API (90 functions), volume_admin_metadata_*, health
API_VERSION = "1.0"

#: The exception modules a caller lists in ``allowed_remote_exmods`` to get typed errors back.
ALLOWED_EXMODS = ["dbworker.exception"]

SEED = """
    iscsi_target_count_by_host(host)
    iscsi_target_create_safe(values)
    migration_create(values)
    migration_get(migration_id)
    migration_get_all_unconfirmed(confirm_window)
    migration_get_by_instance_and_status(instance_uuid, status)
    migration_update(id, values)
    quota_class_create(class_name, resource, limit)
    quota_class_destroy(class_name, resource)
    quota_class_destroy_all_by_name(class_name)
    quota_class_get(class_name, resource)
    quota_class_get_all_by_name(class_name)
    quota_class_update(class_name, resource, limit)
    quota_create(project_id, resource, limit)
    quota_destroy(project_id, resource)
    quota_destroy_all_by_project(project_id)
    quota_get(project_id, resource)
    quota_get_all_by_project(project_id)
    quota_reserve(resources, quotas, deltas, expire, until_refresh, max_age)
    quota_update(project_id, resource, limit)
    quota_usage_create(project_id, resource, in_use, reserved, until_refresh)
    quota_usage_destroy(project_id, resource)
    quota_usage_get(project_id, resource)
    quota_usage_get_all_by_project(project_id)
    quota_usage_update(class_name, resource, in_use, reserved, until_refresh)
    reservation_commit(reservations)
    reservation_create(uuid, usage, project_id, resource, delta, expire)
    reservation_destroy(uuid)
    reservation_expire()
    reservation_get(uuid)
    reservation_get_all_by_project(project_id)
    reservation_rollback(reservations)
    service_create(values)
    service_destroy(service_id)
    service_get(service_id)
    service_get_all(disabled=None)
    service_get_all_by_host(host)
    service_get_all_by_topic(topic)
    service_get_all_volume_sorted()
    service_get_by_args(host, binary)
    service_get_by_host_and_topic(host, topic)
    service_update(service_id, values)
    sm_backend_conf_create(values)
    sm_backend_conf_delete(sm_backend_conf_id)
    sm_backend_conf_get(sm_backend_conf_id)
    sm_backend_conf_get_all()
    sm_backend_conf_get_by_sr(sr_uuid)
    sm_backend_conf_update(sm_backend_conf_id, values)
    sm_flavor_create(values)
    sm_flavor_delete(sm_flavor_id)
    sm_flavor_get(sm_flavor)
    sm_flavor_get_all()
    sm_flavor_update(sm_flavor_id, values)
    sm_volume_create(values)
    sm_volume_delete(volume_id)
    sm_volume_get(volume_id)
    sm_volume_get_all()
    sm_volume_update(volume_id, values)
    snapshot_create(values)
    snapshot_destroy(snapshot_id)
    snapshot_get(snapshot_id)
    snapshot_get_all()
    snapshot_get_all_by_project(project_id)
    snapshot_get_all_for_volume(volume_id)
    snapshot_update(snapshot_id, values)
    volume_allocate_iscsi_target(volume_id, host)
    volume_attached(volume_id, instance_id, mountpoint)
    volume_create(values)
    volume_data_get_for_project(project_id, session=None)
    volume_destroy(volume_id)
    volume_detached(volume_id)
    volume_get(volume_id)
    volume_get_active_by_window(begin, end=None, project_id=None)
    volume_get_all()
    volume_get_all_by_host(host)
    volume_get_all_by_instance_uuid(instance_uuid)
    volume_get_all_by_project(project_id)
    volume_get_iscsi_target_num(volume_id)
    volume_metadata_delete(volume_id, key)
    volume_metadata_get(volume_id)
    volume_metadata_update(volume_id, metadata, delete)
    volume_type_create(values)
    volume_type_destroy(name)
    volume_type_extra_specs_delete(volume_type_id, key)
    volume_type_extra_specs_get(volume_type_id)
    volume_type_extra_specs_update_or_create(volume_type_id, extra_specs)
    volume_type_get(id)
    volume_type_get_all(inactive=False)
    volume_type_get_by_name(name)
    volume_update(volume_id, values)
"""

#: Seed signatures the contract extends with optional arguments (contract §3.2).
CHANGED = """
    quota_reserve(resources, quotas, deltas, expire=None, until_refresh=None, max_age=None, project_id=None)
"""

EXTRA = """
    volume_admin_metadata_get(volume_id)
    volume_admin_metadata_update(volume_id, metadata, delete)
    volume_admin_metadata_delete(volume_id, key)
"""

#: What each function returns (contract §4): the Python entries decode replies by this shape.
_SHAPES = {
    wire.Reply.RECORD: """
        iscsi_target_create_safe migration_create migration_get migration_get_by_instance_and_status
        migration_update quota_class_create quota_class_get quota_class_update quota_create
        quota_get quota_update quota_usage_create quota_usage_get quota_usage_update
        reservation_create reservation_get service_create service_get service_get_by_args
        service_get_by_host_and_topic service_update sm_backend_conf_create sm_backend_conf_get
        sm_backend_conf_get_by_sr sm_backend_conf_update sm_flavor_create sm_flavor_get
        sm_flavor_update sm_volume_create sm_volume_get sm_volume_update snapshot_create
        snapshot_get snapshot_update volume_attached volume_create volume_detached volume_get
        volume_type_create volume_type_get volume_type_get_by_name volume_update
    """,
    wire.Reply.RECORDS: """
        migration_get_all_unconfirmed service_get_all service_get_all_by_host
        service_get_all_by_topic sm_backend_conf_get_all sm_flavor_get_all sm_volume_get_all
        snapshot_get_all snapshot_get_all_by_project snapshot_get_all_for_volume
        volume_get_active_by_window volume_get_all volume_get_all_by_host
        volume_get_all_by_instance_uuid volume_get_all_by_project
    """,
    wire.Reply.RECORDS_BY_NAME: "volume_type_get_all",
    wire.Reply.RECORD_PAIRS: "service_get_all_volume_sorted",
}
#: Every function's reply shape; the ones not listed above are :attr:`wire.Reply.PLAIN`.
REPLIES: dict[str, wire.Reply] = {name: shape for shape, names in _SHAPES.items() for name in names.split()}


def reply_shape(name: str) -> wire.Reply:
    """Return the shape of function ``name``'s reply (``PLAIN`` for any other name)."""
    return REPLIES.get(name, wire.Reply.PLAIN)


#: Parameters a Python caller may pass but that never go on the wire (Folsom's DB session).
LOCAL_ONLY = frozenset({"session"})

#: Seed parameter names the worker accepts under another name (contract §9.2).
ALIASES = {"quota_usage_update": {"class_name": "project_id"}}


@dataclass(frozen=True)
class Function:
    """One catalogue entry: the name and the parameters after ``context``."""

    name: str
    signature: inspect.Signature

    @property
    def wire_params(self) -> list[inspect.Parameter]:
        """The parameters that travel: all but :data:`LOCAL_ONLY`, aliases resolved."""
        aliases = ALIASES.get(self.name, {})
        return [
            p.replace(name=aliases.get(p.name, p.name))
            for p in self.signature.parameters.values()
            if p.name not in LOCAL_ONLY
        ]


def _parse(block: str) -> dict[str, Function]:
    functions = {}
    for line in filter(None, (raw.strip() for raw in block.splitlines())):
        call = ast.parse(f"def {line}: pass").body[0]
        assert isinstance(call, ast.FunctionDef)
        args = call.args
        defaults = [ast.literal_eval(d) for d in args.defaults]
        names = [a.arg for a in args.args]
        padded = [inspect.Parameter.empty] * (len(names) - len(defaults)) + defaults
        params = [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
            for n, d in zip(names, padded, strict=True)
        ]
        functions[call.name] = Function(call.name, inspect.Signature(params))
    return functions


#: Every callable function, by name, seed first.
FUNCTIONS: dict[str, Function] = {**_parse(SEED), **_parse(CHANGED), **_parse(EXTRA)}
SEED_NAMES: frozenset[str] = frozenset(_parse(SEED))
