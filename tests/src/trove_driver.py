"""Drives a guest through Trove's own guest API (trove.guestagent.api.API).

Reads JSON lines on stdin. The first line configures the client:
  {"url": <transport url>, "instance_id": <id>, "key": <instance key or null>}
Each further line is a call:
  {"method": <API method>, "kwargs": {...}}
("_raw:<method>" sends a method the API has no wrapper for; "_truncated:<method>" sends it with
every ciphertext truncated) and is answered by one JSON line on stdout:
  {"ok": <result>} or {"error": {"class": <exception class>, "message": <text>}}
The instance key arrives on stdin only (never argv or the environment).
"""
import json
import sys

from oslo_config import cfg

from trove.common import cfg as trove_cfg  # noqa: F401  (registers Trove's options)
from trove.common import context as trove_context
from trove.guestagent import api as guest_api
from trove.instance import models
from trove import rpc

CONF = cfg.CONF


def main():
    conf = json.loads(sys.stdin.readline())
    CONF([], project="trove")
    rpc.set_defaults("trove")
    from oslo_messaging import transport as om_transport
    CONF.register_opts(om_transport._transport_opts)
    CONF.set_override("transport_url", conf["url"])
    CONF.set_override("enable_secure_rpc_messaging", conf["key"] is not None)
    rpc.init(CONF)
    # The key Trove's taskmanager would read from its database for this instance.
    models.get_instance_encryption_key = lambda _instance_id: conf["key"]
    # prepare() looks the instance up in Trove's database for its key; answer as it would.
    instance = type("Instance", (), {"key": conf["key"]})()
    models.DBInstance.get_by = staticmethod(lambda **_kw: instance)
    ctx = trove_context.TroveContext(user_id="tester", project_id="p1")
    api = guest_api.API(ctx, conf["instance_id"])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            method = req["method"]
            kwargs = req.get("kwargs", {})
            if method.startswith("_raw:"):
                # A method the API has no wrapper for, sent as Trove's API sends calls.
                result = api._call(method[5:], 15, "1.0", **kwargs)
            elif method.startswith("_truncated:"):
                # The same, with every ciphertext Trove's SecureSerializer makes cut to its
                # first 30 bytes (IV + 14): a truncated ciphertext on the wire.
                from trove.common import crypto_utils as cu
                real = cu.encrypt_data
                cu.encrypt_data = lambda *a, **kw: real(*a, **kw)[:30]
                try:
                    result = api._call(method[11:], 15, "1.0", **kwargs)
                finally:
                    cu.encrypt_data = real
            else:
                result = getattr(api, method)(**kwargs)
            out = {"ok": result}
        except Exception as e:  # noqa: BLE001  (reported to the test)
            out = {"error": {"class": type(e).__name__, "message": str(e)}}
        print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
