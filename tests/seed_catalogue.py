"""Cinder's DB API at Folsom: the 90 functions of ``cinder.db.api`` with their signatures after
``context``, copied from the Folsom documentation of ``cinder.db.api``. A test fixture: dbworker's
own signatures come from its handlers, and tests/unit/test_catalogue.py holds them to these (and
names each deliberate difference)."""

from __future__ import annotations

import ast
import inspect

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


def parse(block: str) -> dict[str, inspect.Signature]:
    """Return ``{name: signature}`` for each ``name(params)`` line of ``block``."""
    functions = {}
    for line in filter(None, (raw.strip() for raw in block.splitlines())):
        call = ast.parse(f"def {line}: pass").body[0]
        assert isinstance(call, ast.FunctionDef)
        names = [a.arg for a in call.args.args]
        defaults = [ast.literal_eval(d) for d in call.args.defaults]
        padded = [inspect.Parameter.empty] * (len(names) - len(defaults)) + defaults
        params = [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
            for n, d in zip(names, padded, strict=True)
        ]
        functions[call.name] = inspect.Signature(params)
    return functions


#: Cinder's signature of every seed function, by name.
SEED_SIGNATURES: dict[str, inspect.Signature] = parse(SEED)
