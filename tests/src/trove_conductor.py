"""Serves the `trove-conductor` topic with Trove's own conductor (trove.conductor.manager.Manager)
behind oslo.messaging and Trove's ConductorHostSerializer, as trove-conductor runs it, with its
database rows held in memory.

Reads one JSON line on stdin:
  {"url": <transport url>, "keys": {<instance id>: <instance key or null>},
   "backups": {<backup id>: <instance id>}}
(the instance keys arrive on stdin only, never argv or the environment), then writes
{"ready": true}, then one JSON line per row Trove's conductor saved:
  {"heartbeat": {"instance_id": .., "status": <service status description>}}
  {"update_backup": {"id": .., "instance_id": .., "state": .., "location": .., "size": ..,
                     "checksum": .., "backup_type": ..}}
or one line per call that failed inside Trove's conductor:
  {"error": {"method": .., "class": .., "message": ..}}
It serves until stdin closes.
"""
import json
import sys
import threading

from oslo_config import cfg
import oslo_messaging as messaging
from oslo_messaging.rpc import dispatcher

from trove.common import cfg as trove_cfg  # noqa: F401  (registers Trove's options)
from trove.common import exception as trove_exception
from trove.common.rpc import conductor_host_serializer as host_serializer
from trove.common.rpc import serializer as trove_serializer
from trove.common.rpc import version as rpc_version
from trove.conductor import manager as conductor_manager
from trove.instance import service_status
from trove import rpc

CONF = cfg.CONF
OUT = threading.Lock()


def emit(obj):
    with OUT:
        print(json.dumps(obj, default=str), flush=True)


class LastSeenRow(object):
    """trove.conductor.models.LastSeen, in memory."""
    rows = {}

    def __init__(self, instance_id, method_name, sent):
        self.instance_id = instance_id
        self.method_name = method_name
        self.sent = sent

    def save(self):
        LastSeenRow.rows[(self.instance_id, self.method_name)] = self

    @classmethod
    def load(cls, instance_id, method_name):
        try:
            return cls.rows[(instance_id, method_name)]
        except KeyError:
            raise trove_exception.NotFound(uuid=instance_id)

    @classmethod
    def create(cls, instance_id, method_name, sent):
        row = cls(instance_id, method_name, sent)
        row.save()
        return row


class StatusRow(object):
    """An InstanceServiceStatus row, in memory."""

    def __init__(self, instance_id):
        self.instance_id = instance_id
        self.status = service_status.ServiceStatuses.NEW

    def get_status(self):
        return self.status

    def set_status(self, status):
        self.status = status

    def save(self):
        emit({"heartbeat": {"instance_id": self.instance_id,
                            "status": self.status.description}})


class BackupRow(object):
    """A DBBackup row, in memory: the fields Trove's conductor may set."""
    FIELDS = ["location", "backup_type", "size", "state", "checksum"]

    def __init__(self, backup_id, instance_id):
        self.id = backup_id
        self.instance_id = instance_id
        self.location = None
        self.backup_type = None
        self.size = None
        self.state = "NEW"
        self.checksum = None

    def save(self):
        row = {"id": self.id, "instance_id": self.instance_id}
        row.update({f: getattr(self, f) for f in self.FIELDS})
        emit({"update_backup": row})


class RecordingManager(conductor_manager.Manager):
    """Trove's conductor, reporting a call that fails inside it (a cast has no reply)."""

    def _run(self, method, ctxt, kwargs):
        try:
            return getattr(conductor_manager.Manager, method)(self, ctxt, **kwargs)
        except Exception as e:  # noqa: BLE001  (reported to the test)
            emit({"error": {"method": method, "class": type(e).__name__,
                            "message": str(e)}})
            raise

    def heartbeat(self, ctxt, **kwargs):
        return self._run("heartbeat", ctxt, kwargs)

    def update_backup(self, ctxt, **kwargs):
        return self._run("update_backup", ctxt, kwargs)


def main():
    conf = json.loads(sys.stdin.readline())
    CONF([], project="trove")
    rpc.set_defaults("trove")
    from oslo_messaging import transport as om_transport
    CONF.register_opts(om_transport._transport_opts)
    CONF.set_override("transport_url", conf["url"])
    rpc.init(CONF)

    keys = conf["keys"]
    # trove-conductor reads each instance's key from its database.
    host_serializer.get_instance_encryption_key = lambda instance_id: keys.get(instance_id)
    conductor_manager.LastSeen = LastSeenRow
    statuses = {}
    conductor_manager.inst_models.InstanceServiceStatus.find_by = staticmethod(
        lambda instance_id, **_kw: statuses.setdefault(instance_id, StatusRow(instance_id)))
    backups = {b: BackupRow(b, i) for b, i in conf["backups"].items()}

    def find_backup(id, **_kw):  # noqa: A002  (Trove's keyword)
        try:
            return backups[id]
        except KeyError:
            raise trove_exception.NotFound(uuid=id)
    conductor_manager.bkup_models.DBBackup.find_by = staticmethod(find_backup)

    target = messaging.Target(topic="trove-conductor", server="conductor-test",
                              version=rpc_version.RPC_API_VERSION)
    serializer = host_serializer.ConductorHostSerializer(
        trove_serializer.TroveRequestContextSerializer(None), None)
    server = messaging.get_rpc_server(
        rpc.TRANSPORT, target, [RecordingManager()], executor="threading",
        serializer=serializer, access_policy=dispatcher.DefaultRPCAccessPolicy)
    server.start()
    emit({"ready": True})
    sys.stdin.read()
    server.stop()
    server.wait()


if __name__ == "__main__":
    main()
