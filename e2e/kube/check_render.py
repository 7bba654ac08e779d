#!/usr/bin/env python3
"""Checks the objects `helm template` renders from charts/sluice.

Usage: check_render.py RENDERED.yaml VALUES.yaml...

Reads the rendered multi-document YAML and the values files it was rendered
with (merged over the chart's values.yaml, in order), and checks what a
reviewer would: the expected kinds are there (a ServiceMonitor only when
asked for), RBAC is least privilege (no wildcards; the controller reads the
four kinds and Secrets, patches status, writes Events and its Lease; the
proxies get no API access at all), the proxies' flags point at the
controller's Service and the token Secret they mount, probes use the admin
port, every Service and PodDisruptionBudget selects pods that exist, and
every container is locked down and has resources. With the raft counter
store: every replica is in SLUICE_RAFT_PEERS under its stable DNS name on the
headless Service's raft port, the Raft token comes from a Secret, the
PodDisruptionBudget keeps a quorum, and /var/lib/sluice is a volume claim
unless persistence is turned off. Prints one line per
problem and exits 1 if there is any.
"""

import sys

import yaml

KINDS = ["aigateways", "backends", "mcproutes", "budgets"]


def merge(base, over):
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def main():
    rendered_path, *values_paths = sys.argv[1:]
    with open("charts/sluice/values.yaml") as f:
        values = yaml.safe_load(f)
    for path in values_paths:
        with open(path) as f:
            merge(values, yaml.safe_load(f) or {})
    with open(rendered_path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]

    problems = []

    def expect(condition, message):
        if not condition:
            problems.append(message)

    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)

    def named(kind, name):
        return next((o for o in by_kind.get(kind, []) if o["metadata"]["name"] == name), None)

    namespace = objects[0]["metadata"].get("namespace")
    for obj in objects:
        meta = obj["metadata"]
        what = f'{obj["kind"]}/{meta["name"]}'
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            expect(meta.get("namespace") == namespace, f"{what}: namespace {meta.get('namespace')}")
        labels = meta.get("labels", {})
        expect(labels.get("app.kubernetes.io/part-of") == "sluice", f"{what}: no part-of label")
        for key, value in values["commonLabels"].items():
            expect(labels.get(key) == value, f"{what}: commonLabels {key} missing")

    # Kinds.
    c, p, state = values["controller"], values["proxy"], values["state"]
    expected = {"Deployment": 1, "StatefulSet": 1, "Service": 3}
    expected["PodDisruptionBudget"] = int(c["pdb"]["enabled"]) + int(p["pdb"]["enabled"])
    expected["ServiceAccount"] = int(c["serviceAccount"]["create"]) + int(p["serviceAccount"]["create"])
    raft = state["type"] == "raft"
    expected["Secret"] = (
        int(not values["streamToken"]["existingSecret"])
        + int(state["type"] == "redis" and not state["redis"]["existingSecret"])
        + int(raft and not state["raft"]["existingSecret"])
    )
    expected["ServiceMonitor"] = 2 if values["serviceMonitor"]["enabled"] else 0
    # The controller watches one namespace: nothing cluster-wide.
    expected.update({"ClusterRole": 0, "ClusterRoleBinding": 0, "Role": 2, "RoleBinding": 2})
    for kind, count in expected.items():
        got = len(by_kind.get(kind, []))
        expect(got == count, f"{count} {kind} expected, {got} rendered")
    unexpected = set(by_kind) - set(expected)
    expect(not unexpected, f"unexpected kinds: {sorted(unexpected)}")

    # Workloads.
    deployment = by_kind["Deployment"][0]
    statefulset = by_kind["StatefulSet"][0]
    controller_pod = deployment["spec"]["template"]
    proxy_pod = statefulset["spec"]["template"]
    expect(deployment["spec"]["replicas"] == c["replicas"], "controller replicas")
    expect(statefulset["spec"]["replicas"] == p["replicas"], "proxy replicas")
    ctl = controller_pod["spec"]["containers"][0]
    prx = proxy_pod["spec"]["containers"][0]
    registry = values["imageRegistry"].rstrip("/")
    for container, image in ((ctl, c["image"]), (prx, p["image"])):
        want = f'{image["repository"]}:{image["tag"] or "0.1.0"}'
        want = f"{registry}/{want}" if registry else want
        expect(container["image"] == want, f'image {container["image"]}, expected {want}')
    if not values_paths:
        expect(ctl["image"].startswith("sluice-controller:"), f'controller image {ctl["image"]}')
        expect(prx["image"].startswith("sluice:"), f'proxy image {prx["image"]}')

    # The controller's flags and the proxies' flags agree on ports, URL and token.
    ctl_args = ctl["args"]
    token_dir = "/etc/sluice/stream-token"
    token_file = f'{token_dir}/{values["streamToken"]["key"]}'
    for flag in (
        f'--listen=0.0.0.0:{c["streamPort"]}',
        f'--admin=0.0.0.0:{c["adminPort"]}',
        f"--token-file={token_file}",
    ):
        expect(flag in ctl_args, f"controller args lack {flag}: {ctl_args}")
    expect(f"--namespace={namespace}" in ctl_args, f"controller --namespace: {ctl_args}")
    controller_service = named("Service", deployment["metadata"]["name"])
    expect(controller_service is not None, "no Service named like the controller Deployment")
    url = p["controllerUrl"] or (
        f'http://{deployment["metadata"]["name"]}.{namespace}.svc:{c["streamPort"]}'
    )
    prx_args = prx["args"]
    expect(prx_args[0] == "run", f"proxy args start with {prx_args[0]}")
    for flag in (
        f"--controller={url}",
        f"--controller-token-file={token_file}",
        f'--listen=0.0.0.0:{p["port"]}',
        f'--admin=0.0.0.0:{p["adminPort"]}',
    ):
        expect(flag in prx_args, f"proxy args lack {flag}: {prx_args}")
    if controller_service and not p["controllerUrl"]:
        ports = {sp["port"] for sp in controller_service["spec"]["ports"]}
        expect(c["streamPort"] in ports, "the controller Service lacks the stream port")
    token_secret = values["streamToken"]["existingSecret"] or next(
        (s["metadata"]["name"] for s in by_kind.get("Secret", []) if "stream-token" in s["metadata"]["name"]), None
    )
    for pod, container in ((controller_pod, ctl), (proxy_pod, prx)):
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mount = next((m for m in container["volumeMounts"] if m["mountPath"] == token_dir), None)
        expect(mount is not None, f"{container['name']}: token not mounted")
        if mount:
            expect(volumes[mount["name"]]["secret"]["secretName"] == token_secret,
                   f"{container['name']}: token volume is not Secret {token_secret}")
    env = {e["name"]: e for e in prx.get("env", [])}
    expect(env.get("SLUICE_STATE", {}).get("value") == state["type"], "SLUICE_STATE")
    expect(env.get("SLUICE_REPLICA", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
           == "metadata.name", "SLUICE_REPLICA is not the pod's name")
    if state["type"] == "redis":
        expect(env.get("SLUICE_REDIS_CLUSTER", {}).get("value") == str(state["redis"]["cluster"]).lower(),
               "SLUICE_REDIS_CLUSTER")
        ref = env.get("SLUICE_REDIS_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        secret = state["redis"]["existingSecret"]
        if not secret:
            made = named("Secret", ref.get("name"))
            expect(made is not None and made["stringData"]["url"] == state["redis"]["url"], "redis Secret")
        else:
            expect(ref == {"name": secret, "key": state["redis"]["existingSecretKey"]}, f"redis env {ref}")
    else:
        expect("SLUICE_REDIS_URL" not in env, "SLUICE_REDIS_URL without redis")
    expect(env.get("XDG_STATE_HOME", {}).get("value") == "/var/lib/sluice", "XDG_STATE_HOME")

    # Raft: pod N is member N+1; every replica is a peer under its stable
    # name (<pod>.<headless Service>.<namespace>.svc) on the raft port.
    headless_name = statefulset["spec"]["serviceName"]
    raft_env = sorted(name for name in env if name.startswith("SLUICE_RAFT_"))
    if raft:
        port = state["raft"]["port"]
        sts_name = statefulset["metadata"]["name"]
        peers = ",".join(f"{i + 1}={sts_name}-{i}.{headless_name}.{namespace}.svc:{port}"
                         for i in range(p["replicas"]))
        for name, want in (("SLUICE_RAFT_ID", "auto"), ("SLUICE_RAFT_PEERS", peers),
                           ("SLUICE_RAFT_LISTEN", f"0.0.0.0:{port}")):
            got = env.get(name, {}).get("value")
            expect(got == want, f"{name} is {got!r}, expected {want!r}")
        listed = env.get("SLUICE_RAFT_PEERS", {}).get("value", "").split(",")
        expect(len(listed) == p["replicas"] and len(set(listed)) == len(listed),
               f"SLUICE_RAFT_PEERS lists {len(listed)} members for {p['replicas']} replicas")
        raft_dir = env.get("SLUICE_RAFT_DIR", {}).get("value", "")
        expect(raft_dir.startswith("/var/lib/sluice/"), f"SLUICE_RAFT_DIR {raft_dir!r} is not on the state volume")
        ref = env.get("SLUICE_RAFT_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
        secret = state["raft"]["existingSecret"]
        if secret:
            expect(ref == {"name": secret, "key": state["raft"]["existingSecretKey"]}, f"raft token env {ref}")
        else:
            made = named("Secret", ref.get("name"))
            expect(made is not None and ref.get("key") in made.get("data", {})
                   and len(made["data"][ref["key"]]) >= 64, f"raft token Secret {ref}")
        raft_ports = [cp for cp in prx["ports"] if cp["name"] == "raft"]
        expect([cp["containerPort"] for cp in raft_ports] == [port], f"proxy raft containerPort {prx['ports']}")
        expect(not env.get("SLUICE_RAFT_TOKEN", {}).get("value"), "the Raft token is a literal value")
    else:
        expect(not raft_env, f"{raft_env} without raft")
        expect("raft" not in [cp["name"] for cp in prx["ports"]], "a raft port without raft")

    # Persistence: a claim per replica when asked, by default with raft.
    persistent = p["persistence"]["enabled"]
    if persistent is None:
        persistent = raft
    claims = [t["metadata"]["name"] for t in statefulset["spec"].get("volumeClaimTemplates", [])]
    state_volume = next((v for v in proxy_pod["spec"]["volumes"] if v["name"] == "state"), None)
    if persistent:
        expect(claims == ["state"], f"volumeClaimTemplates {claims}, expected [state]")
        expect(state_volume is None, "a state volume in the pod besides the claim")
        claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
        expect(claim["resources"]["requests"]["storage"] == p["persistence"]["size"], f"claim size {claim}")
    else:
        expect(not claims, f"volumeClaimTemplates {claims} without persistence")
        expect(state_volume is not None and "emptyDir" in state_volume, f"state volume {state_volume}")
    expect(any(m["name"] == "state" and m["mountPath"] == "/var/lib/sluice" for m in prx["volumeMounts"]),
           "state volume not mounted at /var/lib/sluice")

    # Probes on the admin ports; containers locked down, with resources.
    for pod, container, admin in ((controller_pod, ctl, c["adminPort"]), (proxy_pod, prx, p["adminPort"])):
        name = container["name"]
        ports = {cp["name"]: cp["containerPort"] for cp in container["ports"]}
        expect(ports.get("admin") == admin, f"{name}: admin port {ports}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet", {})
            expect(get.get("path") == path and get.get("port") == "admin", f"{name}: {probe} {get}")
        sc = container.get("securityContext", {})
        expect(sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False,
               f"{name}: securityContext {sc}")
        expect(pod["spec"]["securityContext"].get("runAsNonRoot"), f"{name}: runAsNonRoot")
        res = container.get("resources", {})
        expect(res.get("requests") and res.get("limits", {}).get("memory"), f"{name}: resources {res}")
    expect(proxy_pod["spec"].get("automountServiceAccountToken") is False, "proxy pods mount an API token")
    # A new proxy waits for the controller's first config before it listens:
    # its startup probe comes from values, with at least a minute's budget.
    startup = prx.get("startupProbe", {})
    expect(startup.get("httpGet", {}).get("port") == "admin", f"proxy startupProbe {startup}")
    expect({k: startup.get(k) for k in ("periodSeconds", "failureThreshold")} == p["startupProbe"],
           f"proxy startupProbe {startup}, values {p['startupProbe']}")
    expect(startup.get("periodSeconds", 0) * startup.get("failureThreshold", 0) >= 60,
           "proxy startupProbe allows less than a minute")
    # Only the controller's leader is Ready: a rollout must not wait for new pods to be.
    rolling = deployment["spec"]["strategy"].get("rollingUpdate", {})
    expect(str(rolling.get("maxUnavailable")) in ("100%", str(c["replicas"])),
           f"controller rollout waits for standbys to be Ready: {rolling}")
    expect(p["port"] in [cp["containerPort"] for cp in prx["ports"] if cp["name"] == "http"], "proxy http port")

    # Services: the client Service on the data plane only, a headless one
    # for stable names; every selector matches a pod template.
    pods = [controller_pod["metadata"]["labels"], proxy_pod["metadata"]["labels"]]

    def selects(selector):
        return any(all(labels.get(k) == v for k, v in selector.items()) for labels in pods)

    for service in by_kind["Service"]:
        expect(selects(service["spec"]["selector"]), f'Service/{service["metadata"]["name"]} selects no pod')
    headless = named("Service", headless_name)
    expect(headless is not None and headless["spec"].get("clusterIP") == "None", "no headless Service")
    if headless:
        # Raft peers reach each other before they are Ready.
        expect(headless["spec"].get("publishNotReadyAddresses") is True, "headless Service hides unready pods")
        raft_ports = [(sp["port"], sp["targetPort"]) for sp in headless["spec"]["ports"] if sp["name"] == "raft"]
        want = [(state["raft"]["port"], "raft")] if raft else []
        expect(raft_ports == want, f"headless Service raft ports {raft_ports}, expected {want}")
    client = named("Service", statefulset["metadata"]["name"])
    expect(client is not None, "no client Service named like the StatefulSet")
    if client:
        expect(client["spec"]["type"] == p["service"]["type"], "client Service type")
        expect([(sp["port"], sp["targetPort"]) for sp in client["spec"]["ports"]] == [(p["service"]["port"], "http")],
               f'client Service ports {client["spec"]["ports"]}')
    for pdb in by_kind.get("PodDisruptionBudget", []):
        expect(selects(pdb["spec"]["selector"]["matchLabels"]), f'PDB/{pdb["metadata"]["name"]} selects no pod')
    proxy_pdb = named("PodDisruptionBudget", statefulset["metadata"]["name"])
    expect((proxy_pdb is not None) == p["pdb"]["enabled"], "proxy PDB")
    if proxy_pdb:
        spec = {k: v for k, v in proxy_pdb["spec"].items() if k in ("minAvailable", "maxUnavailable")}
        # With raft, a disruption must leave a quorum: floor(n/2)+1 pods.
        want = {"minAvailable": p["replicas"] // 2 + 1} if raft else {"maxUnavailable": p["pdb"]["maxUnavailable"]}
        expect(spec == want, f"proxy PDB {spec}, expected {want}")
    for monitor in by_kind.get("ServiceMonitor", []):
        matched = [s for s in by_kind["Service"]
                   if all(s["metadata"]["labels"].get(k) == v
                          for k, v in monitor["spec"]["selector"]["matchLabels"].items())]
        expect(len(matched) == 1, f'ServiceMonitor/{monitor["metadata"]["name"]} matches {len(matched)} Services')
        for s in matched:
            expect("admin" in [sp["name"] for sp in s["spec"]["ports"]], "scraped Service has no admin port")

    # RBAC: no wildcards, nothing beyond what the controller needs.
    allowed = {
        ("sluice.dev", r): {"get", "list", "watch"} for r in KINDS
    }
    allowed.update({("sluice.dev", f"{r}/status"): {"patch"} for r in KINDS})
    allowed[("", "secrets")] = {"get", "list", "watch"}
    allowed[("events.k8s.io", "events")] = {"create", "patch"}
    allowed[("coordination.k8s.io", "leases")] = {"get", "create", "update", "patch"}
    granted = {}
    for role in by_kind.get("Role", []) + by_kind.get("ClusterRole", []):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                expect("*" not in rule.get(field, []), f'{role["kind"]}/{role["metadata"]["name"]}: wildcard {field}')
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    key = (group, resource)
                    verbs = set(rule["verbs"])
                    extra = verbs - allowed.get(key, set())
                    expect(not extra, f'{role["kind"]}/{role["metadata"]["name"]}: {sorted(extra)} on {key}')
                    granted.setdefault(key, set()).update(verbs)
            if role["kind"] == "ClusterRole":
                expect(("coordination.k8s.io") not in rule["apiGroups"], "leases granted cluster-wide")
    for key, verbs in allowed.items():
        expect(granted.get(key) == verbs, f"{key}: granted {sorted(granted.get(key, []))}, needs {sorted(verbs)}")
    proxy_sa = proxy_pod["spec"]["serviceAccountName"]
    for binding in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", []):
        for subject in binding["subjects"]:
            expect(subject["name"] == controller_pod["spec"]["serviceAccountName"],
                   f'{binding["metadata"]["name"]} binds {subject["name"]}')
            expect(subject["name"] != proxy_sa, "a role is bound to the proxies")
    for sa in by_kind.get("ServiceAccount", []):
        if sa["metadata"]["name"] == proxy_sa:
            expect(sa.get("automountServiceAccountToken") is False, "proxy ServiceAccount mounts a token")

    for problem in problems:
        print(f"    {rendered_path}: {problem}")
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    print(f"    {len(problems)} problems in {len(objects)} objects ({counts})")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
