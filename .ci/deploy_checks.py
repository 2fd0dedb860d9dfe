"""Checks behind .ci/deploy-checks that need more than a shell: reading rendered manifests,
asserting on them, and evaluating the Tiltfile against stand-ins for Tilt's functions.

Each subcommand prints what it found and exits non-zero with a reason on the first problem.
"""

import argparse
import os
import re
import shlex
import sys

import yaml

# The proxy's public endpoints; nothing else may be routed from outside the cluster.
PUBLIC_PATHS = {"/token", "/proxy/token"}
# Kinds that come from CRDs: kubernetes-validate has no schema for them, so they are checked
# here instead.
CRD_KINDS = {"ServiceMonitor", "HTTPRoute"}
CONFIG_MOUNT = "/etc/tiktok-auth0-proxy"


class CheckError(Exception):
    """A deployment file does not say what it must."""


def expect(condition, message):
    if not condition:
        raise CheckError(message)


def load_stream(path):
    with open(path, encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def load_yaml(path):
    with open(path, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def by_kind(docs, kind):
    return [doc for doc in docs if doc.get("kind") == kind]


def only(docs, kind):
    found = by_kind(docs, kind)
    expect(len(found) == 1, f"expected exactly one {kind}, found {len(found)}")
    return found[0]


def millis(duration):
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(duration))
    expect(match, f"unsupported duration {duration!r}")
    number, unit = int(match.group(1)), match.group(2)
    return number * {"ms": 1, "s": 1000, "m": 60000}[unit]


# --- subcommands -------------------------------------------------------------------------------


def kube_versions(args):
    """Print the oldest Kubernetes version the chart claims and the newest one to validate."""
    import kubernetes_validate.utils as kv

    claim = load_yaml(os.path.join(args.chart, "Chart.yaml"))["kubeVersion"]
    lower = re.search(r">=\s*v?(\d+)\.(\d+)", claim)
    expect(lower, f"kubeVersion {claim!r} has no lower bound")
    oldest = (int(lower.group(1)), int(lower.group(2)))
    upper = re.search(r"<\s*v?(\d+)\.(\d+)", claim)
    shipped = sorted({tuple(int(p) for p in v.split(".")[:2]) for v in kv.all_versions()})
    expect(
        oldest in shipped, f"kubernetes-validate has no schemas for {oldest}, the chart's oldest"
    )
    candidates = [
        v
        for v in shipped
        if v >= oldest and (not upper or v < (int(upper.group(1)), int(upper.group(2))))
    ]
    newest = candidates[-1]
    print(f"{oldest[0]}.{oldest[1]}.0 {newest[0]}.{newest[1]}.0")


def core_objects(args):
    """Copy the objects kubernetes-validate knows to a new stream; name the rest."""
    docs = load_stream(args.rendered)
    core = [doc for doc in docs if doc.get("kind") not in CRD_KINDS]
    custom = [
        f"{doc['kind']}/{doc['metadata']['name']}" for doc in docs if doc.get("kind") in CRD_KINDS
    ]
    with open(args.out, "w", encoding="utf-8") as out:
        yaml.safe_dump_all(core, out, sort_keys=False)
    if custom:
        print(
            "note: no built-in schema for "
            + ", ".join(custom)
            + " (CRDs); their fields are checked by the assertions instead"
        )


def extract_config(args):
    """Write the proxy's config.yaml from the rendered ConfigMap."""
    configmap = only(load_stream(args.rendered), "ConfigMap")
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(configmap["data"]["config.yaml"])


def expected_apps(chart, values_file):
    """The app Secret names a values file configures (a list in values replaces the default)."""
    apps = load_yaml(os.path.join(chart, "values.yaml"))["apps"]
    if values_file:
        apps = (load_yaml(values_file) or {}).get("apps", apps)
    return [app["secretName"] for app in apps]


def assert_restricted(container, pod_spec, where):
    """The Pod Security Standards' restricted profile, as it applies to one container."""
    context = container.get("securityContext", {})
    pod_context = pod_spec.get("securityContext", {})
    expect(
        context.get("allowPrivilegeEscalation") is False,
        f"{where}: allowPrivilegeEscalation must be false",
    )
    expect(
        context.get("readOnlyRootFilesystem") is True,
        f"{where}: readOnlyRootFilesystem must be true",
    )
    expect(
        context.get("capabilities", {}).get("drop") == ["ALL"],
        f"{where}: capabilities must drop ALL",
    )
    expect(not context.get("capabilities", {}).get("add"), f"{where}: no capability may be added")
    expect(not context.get("privileged"), f"{where}: must not be privileged")
    non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    expect(non_root is True, f"{where}: runAsNonRoot must be true")
    user = context.get("runAsUser", pod_context.get("runAsUser"))
    expect(user not in (None, 0), f"{where}: runAsUser must be a non-zero uid")
    seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
    expect(
        seccomp.get("type") == "RuntimeDefault", f"{where}: seccompProfile must be RuntimeDefault"
    )


def assert_chart(args):
    docs = load_stream(args.rendered)
    kinds = sorted({doc["kind"] for doc in docs})
    deployment = only(docs, "Deployment")
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    proxy = next(c for c in pod["containers"] if c["name"] == "proxy")
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    expect(
        set(ports) == {"http", "admin"},
        f"container ports must be http and admin, not {sorted(ports)}",
    )

    # Probes: the admin listener's real paths, never the public port.
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = proxy.get(probe, {}).get("httpGet")
        expect(get, f"{probe} must be an httpGet probe")
        expect(get["path"] == path, f"{probe} path is {get['path']!r}, the proxy serves {path}")
        port = get["port"]
        expect(port in ("admin", ports["admin"]), f"{probe} must use the admin port, not {port!r}")

    assert_restricted(proxy, pod, "proxy container")
    expect(
        pod.get("securityContext", {}).get("runAsNonRoot") is True, "pod runAsNonRoot must be true"
    )

    # Settings: from the ConfigMap, at the path the proxy is told, listening where probed.
    configmap = only(docs, "ConfigMap")
    settings = yaml.safe_load(configmap["data"]["config.yaml"])
    expect(
        proxy["args"][:2] == ["--config", f"{CONFIG_MOUNT}/config.yaml"],
        f"proxy args must start with --config {CONFIG_MOUNT}/config.yaml, not {proxy['args']}",
    )
    mount = next((m for m in proxy.get("volumeMounts", []) if m["mountPath"] == CONFIG_MOUNT), None)
    expect(mount, f"nothing is mounted at {CONFIG_MOUNT}")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    expect(
        volume.get("configMap", {}).get("name") == configmap["metadata"]["name"],
        "the config volume must be the chart's ConfigMap",
    )
    expect(
        settings["listen"].endswith(f":{ports['http']}"),
        "listen must match the http container port",
    )
    expect(
        settings["admin_listen"].endswith(f":{ports['admin']}"),
        "admin_listen must match the admin port",
    )
    expect(
        settings["credentials"]["source"] == "kubernetes", "credentials.source must be kubernetes"
    )
    env = {e["name"]: e for e in proxy.get("env", [])}
    expect(
        env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        == "metadata.namespace",
        "POD_NAMESPACE must come from the downward API",
    )

    shutdown = settings["shutdown"]
    budget = millis(shutdown["drain_delay"]) + millis(shutdown["grace_period"])
    grace = pod["terminationGracePeriodSeconds"] * 1000
    expect(
        grace > budget,
        f"terminationGracePeriodSeconds ({grace}ms) must exceed drain_delay + grace_period ({budget}ms)",
    )

    # RBAC: exactly the configured Secrets, read-only.
    secrets = expected_apps(args.chart, args.values)
    expect(
        settings["credentials"]["kubernetes"]["secrets"] == secrets,
        f"ConfigMap lists {settings['credentials']['kubernetes']['secrets']}, values configure {secrets}",
    )
    role = only(docs, "Role")
    expect(len(role["rules"]) == 1, "the Role must have a single rule")
    rule = role["rules"][0]
    expect(
        rule["resources"] == ["secrets"] and rule["apiGroups"] == [""],
        "the Role may only cover core Secrets",
    )
    expect(
        sorted(rule["verbs"]) == ["get", "list", "watch"],
        f"Role verbs must be get, list, watch, not {rule['verbs']}",
    )
    expect(
        rule.get("resourceNames") == secrets,
        f"Role resourceNames {rule.get('resourceNames')} != configured {secrets}",
    )
    binding = only(docs, "RoleBinding")
    expect(
        binding["roleRef"]["name"] == role["metadata"]["name"], "the RoleBinding must bind the Role"
    )
    expect(
        binding["subjects"][0]["name"] == pod["serviceAccountName"],
        "the RoleBinding must name the pod's account",
    )

    # Service: both ports by name, selecting the Deployment's pods.
    service = only(docs, "Service")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    expect(set(service_ports) == {"http", "admin"}, "the Service must expose http and admin")
    for port_name, port in service_ports.items():
        expect(
            port["targetPort"] in (port_name, ports[port_name]),
            f"Service port {port_name} targets {port['targetPort']}",
        )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    expect(
        all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items()),
        "the Service selector must match the pod labels",
    )

    # Routing: public paths only, to the http port only.
    for ingress in by_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                expect(
                    path["path"] in PUBLIC_PATHS,
                    f"Ingress routes {path['path']}, which is not public",
                )
                backend = path["backend"]["service"]
                expect(
                    backend["name"] == service["metadata"]["name"],
                    "Ingress must point at the Service",
                )
                expect(
                    backend["port"].get("name") == "http"
                    or backend["port"].get("number") == service_ports["http"]["port"],
                    "Ingress must use the http port",
                )
    for route in by_kind(docs, "HTTPRoute"):
        expect(
            route["apiVersion"] == "gateway.networking.k8s.io/v1",
            "HTTPRoute must use gateway.networking.k8s.io/v1",
        )
        expect(route["spec"].get("parentRefs"), "HTTPRoute must attach to a Gateway")
        for rule in route["spec"]["rules"]:
            for match in rule["matches"]:
                expect(
                    match["path"]["value"] in PUBLIC_PATHS,
                    f"HTTPRoute routes {match['path']['value']}",
                )
            for ref in rule["backendRefs"]:
                expect(
                    ref["name"] == service["metadata"]["name"]
                    and ref["port"] == service_ports["http"]["port"],
                    "HTTPRoute must send traffic to the Service's http port",
                )

    # Scaling: the HPA owns replicas; a PDB exists exactly when more than one pod can run.
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    replicas = deployment["spec"].get("replicas")
    if hpas:
        expect(replicas is None, "with an HPA the Deployment must not set replicas")
        expect(
            hpas[0]["spec"]["scaleTargetRef"]["name"] == name, "the HPA must target the Deployment"
        )
    else:
        expect(isinstance(replicas, int), "without an HPA the Deployment must set replicas")
    multi = bool(hpas) or (replicas or 1) > 1
    pdbs = by_kind(docs, "PodDisruptionBudget")
    expect(
        bool(pdbs) == multi,
        f"PodDisruptionBudget present: {bool(pdbs)}, more than one replica: {multi}",
    )

    for monitor in by_kind(docs, "ServiceMonitor"):
        expect(
            monitor["apiVersion"] == "monitoring.coreos.com/v1",
            "ServiceMonitor must use monitoring.coreos.com/v1",
        )
        endpoints = monitor["spec"]["endpoints"]
        expect(
            [(e["port"], e["path"]) for e in endpoints] == [("admin", "/metrics")],
            "ServiceMonitor must scrape /metrics on the admin port",
        )
        selector = monitor["spec"]["selector"]["matchLabels"]
        expect(
            all(service["metadata"]["labels"].get(k) == v for k, v in selector.items()),
            "ServiceMonitor selector must match the Service",
        )

    for policy in by_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        expect(
            sorted(spec["policyTypes"]) == ["Egress", "Ingress"],
            "NetworkPolicy must restrict both directions",
        )
        public = [
            r
            for r in spec["ingress"]
            if any(p["port"] in ("http", ports["http"]) for p in r.get("ports", []))
        ]
        expect(
            len(public) == 1 and all(peer.get("namespaceSelector") for peer in public[0]["from"]),
            "only the ingress controller's namespace may reach the public port",
        )
        egress_ports = {p["port"] for r in spec["egress"] for p in r.get("ports", [])}
        expect({53, 443} <= egress_ports, "egress must allow DNS and TikTok on 443")

    for test in [
        d
        for d in by_kind(docs, "Pod")
        if "test" in d["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    ]:
        for container in test["spec"]["containers"]:
            assert_restricted(container, test["spec"], "helm test container")
            expect(
                any("/readyz" in part for part in container["command"]),
                "helm test must ask /readyz",
            )
            expect(
                any(
                    f"{service['metadata']['name']}:{service_ports['admin']['port']}" in part
                    for part in container["command"]
                ),
                "helm test must go through the Service's admin port",
            )

    for kind in args.require_kind or []:
        expect(by_kind(docs, kind), f"expected a {kind} in this rendering")
    print(f"{len(docs)} objects ({', '.join(kinds)}); apps {secrets}")


def assert_local_cluster(args):
    """The local-cluster files agree with each other and with the chart."""
    kind_config = load_yaml("k8s/kind-config.yaml")
    traefik = load_yaml("k8s/traefik-values.yaml")
    dev = load_yaml("k8s/dev-values.yaml")
    sandbox = load_stream("k8s/sandbox.yaml")
    dev_secret = load_yaml("k8s/dev-secret.yaml")
    kustomization = load_yaml("k8s/kustomization.yaml")

    for resource in kustomization["resources"]:
        expect(
            os.path.exists(os.path.join("k8s", resource)), f"kustomization lists missing {resource}"
        )

    node_ports = {traefik["ports"]["web"]["nodePort"], traefik["ports"]["websecure"]["nodePort"]}
    mapped = {
        m["containerPort"]: m["hostPort"]
        for n in kind_config["nodes"]
        for m in n.get("extraPortMappings", [])
    }
    expect(
        node_ports <= set(mapped),
        f"kind must map Traefik's NodePorts {sorted(node_ports)}, maps {sorted(mapped)}",
    )
    expect(
        mapped[traefik["ports"]["web"]["nodePort"]] == 80,
        "Traefik's web NodePort must be published as port 80",
    )
    expect(
        traefik["service"]["type"] == "NodePort",
        "Traefik's Service must be a NodePort for the mappings",
    )
    expect(
        dev["ingress"]["className"] == traefik["ingressClass"]["name"],
        "dev ingress class must be Traefik's",
    )

    deployment = only(sandbox, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert_restricted(container, deployment["spec"]["template"]["spec"], "sandbox container")
    expect(
        container["args"] == ["sandbox"], "the sandbox runs the proxy image's sandbox subcommand"
    )
    sandbox_env = {e["name"]: e["value"] for e in container.get("env", [])}
    service = only(sandbox, "Service")
    base = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/"
    for key in ("token_url", "user_info_url"):
        expect(
            dev["config"]["tiktok"][key].startswith(base),
            f"dev tiktok.{key} must point at the sandbox Service {base}",
        )

    expect(
        [a["secretName"] for a in dev["apps"]] == [dev_secret["metadata"]["name"]],
        "dev values must use the development Secret",
    )
    expect(
        dev_secret["stringData"]["client_key"]
        == sandbox_env["SANDBOX_CLIENT_KEY"]
        == "sandbox-client-key",
        "the dev Secret's client key must be the sandbox's",
    )
    expect(
        dev_secret["stringData"]["client_secret"]
        == sandbox_env["SANDBOX_CLIENT_SECRET"]
        == "sandbox-client-secret",
        "the dev Secret's client secret must be the sandbox's",
    )
    egress = dev["networkPolicy"]["extraEgress"]
    expect(
        any(
            p.get("podSelector", {}).get("matchLabels")
            == deployment["spec"]["selector"]["matchLabels"]
            for rule in egress
            for p in rule["to"]
        ),
        "dev NetworkPolicy must allow egress to the sandbox",
    )
    print(
        f"kind maps {sorted(mapped.items())}; sandbox at {base}; dev Secret {dev_secret['metadata']['name']}"
    )


# --- Tiltfile ---------------------------------------------------------------------------------


class TiltStubs:
    """Stand-ins with the signatures of the Tilt functions this project may use, recording what
    the Tiltfile asks for. A misspelt function or keyword fails the evaluation."""

    def __init__(self, context):
        self.context = context
        self.calls = []
        self.paths = []

    def _record(self, function, **fields):
        self.calls.append((function, fields))

    def globals(self):
        s = self

        def allow_k8s_contexts(contexts):
            s._record("allow_k8s_contexts", contexts=contexts)

        def k8s_context():
            return s.context

        def k8s_namespace():
            return "default"

        def docker_build(
            ref,
            context,
            build_args={},
            dockerfile="Dockerfile",
            dockerfile_contents="",
            live_update=[],
            match_in_env_vars=False,
            ignore=[],
            only=[],
            entrypoint=[],
            target="",
            ssh="",
            network="",
            secret="",
            extra_tag="",
            container_args=None,
            cache_from=[],
            pull=False,
            platform="",
            extra_hosts=[],
        ):
            s.paths += [context, dockerfile]
            s._record("docker_build", ref=ref, build_args=build_args)

        def k8s_yaml(yaml, allow_duplicates=False):
            if isinstance(yaml, str) and not yaml.startswith("blob:"):
                s.paths.append(yaml)
            s._record("k8s_yaml", yaml=yaml)

        def helm(
            pathToChartDir,
            name="",
            namespace="",
            values=[],
            set=[],
            kube_version="",
            skip_crds=False,
        ):
            values = [values] if isinstance(values, str) else values
            s.paths += [pathToChartDir, *values]
            s._record("helm", chart=pathToChartDir, name=name, values=values)
            return "blob:helm"

        def kustomize(pathToDir, kustomize_bin=None, flags=[]):
            s.paths.append(pathToDir)
            s._record("kustomize", dir=pathToDir)
            return "blob:kustomize"

        def k8s_resource(
            workload="",
            new_name="",
            port_forwards=[],
            extra_pod_selectors=[],
            trigger_mode="TRIGGER_MODE_AUTO",
            resource_deps=[],
            objects=[],
            auto_init=True,
            pod_readiness="",
            links=[],
            labels=[],
            discovery_strategy="",
        ):
            s._record(
                "k8s_resource",
                workload=workload,
                port_forwards=port_forwards,
                resource_deps=resource_deps,
                objects=objects,
            )

        def local_resource(
            name,
            cmd,
            deps=None,
            trigger_mode="TRIGGER_MODE_AUTO",
            resource_deps=[],
            ignore=[],
            auto_init=True,
            serve_cmd="",
            cmd_bat="",
            serve_cmd_bat="",
            allow_parallel=False,
            links=[],
            labels=[],
            env={},
            serve_env={},
            readiness_probe=None,
            dir="",
            serve_dir="",
        ):
            deps = [deps] if isinstance(deps, str) else (deps or [])
            s.paths += deps
            s._record(
                "local_resource",
                name=name,
                cmd=cmd,
                trigger_mode=trigger_mode,
                auto_init=auto_init,
                resource_deps=resource_deps,
            )

        def link(url, name=None):
            return url

        def port_forward(local_port, container_port=None, name=None, link_path=None, host=None):
            return f"{local_port}:{container_port or local_port}"

        def watch_file(file_path):
            s.paths.append(file_path)

        def read_file(file_path, default=None):
            s.paths.append(file_path)
            with open(file_path, encoding="utf-8") as f:
                return f.read()

        return {
            "allow_k8s_contexts": allow_k8s_contexts,
            "k8s_context": k8s_context,
            "k8s_namespace": k8s_namespace,
            "docker_build": docker_build,
            "k8s_yaml": k8s_yaml,
            "helm": helm,
            "kustomize": kustomize,
            "k8s_resource": k8s_resource,
            "local_resource": local_resource,
            "link": link,
            "port_forward": port_forward,
            "watch_file": watch_file,
            "read_file": read_file,
            "TRIGGER_MODE_AUTO": "TRIGGER_MODE_AUTO",
            "TRIGGER_MODE_MANUAL": "TRIGGER_MODE_MANUAL",
        }


def evaluate_tiltfile(path, context):
    import starlark_go

    # Tilt's dialect: top-level if/for, global reassignment, sets and while loops.
    starlark_go.configure_starlark(allow_set=True, allow_global_reassign=True, allow_recursion=True)
    stubs = TiltStubs(context)
    # NB: the interpreter does not keep the Python callables alive; holding the dict here until
    # exec returns prevents a crash on a freed function.
    functions = stubs.globals()
    interpreter = starlark_go.Starlark(globals=functions)
    with open(path, encoding="utf-8") as source:
        interpreter.exec(source.read(), filename=path)
    del functions
    return stubs


def tiltfile(args):
    import starlark_go

    kind_name = load_yaml("k8s/kind-config.yaml")["name"]
    context = f"kind-{kind_name}"
    try:
        stubs = evaluate_tiltfile(args.tiltfile, context)
    except starlark_go.StarlarkError as error:
        raise CheckError(f"evaluating with context {context}: {error}") from None

    try:
        evaluate_tiltfile(args.tiltfile, "prod-cluster")
    except starlark_go.StarlarkError as refusal:
        expect("prod-cluster" in str(refusal), f"refusal should name the context: {refusal}")
    else:
        raise CheckError("the Tiltfile must refuse any context but " + context)

    calls = {}
    for name, fields in stubs.calls:
        calls.setdefault(name, []).append(fields)
    expect(
        calls.get("allow_k8s_contexts") == [{"contexts": context}],
        f"allow_k8s_contexts must be exactly {context!r}",
    )

    for path in stubs.paths:
        expect(os.path.exists(path), f"the Tiltfile references {path}, which does not exist")
    for resource in calls.get("local_resource", []):
        words = shlex.split(resource["cmd"])
        if "/" in words[0]:
            expect(
                os.access(words[0], os.X_OK),
                f"{resource['name']} runs {words[0]}, which is not an executable file",
            )
        for word in words[1:]:
            if "/" in word and "://" not in word and not word.startswith("-"):
                expect(
                    os.path.exists(word), f"{resource['name']} names {word}, which does not exist"
                )

    rendered = load_stream(args.rendered_dev) + load_stream(args.rendered_kustomize)
    workloads = {d["metadata"]["name"] for d in rendered if d["kind"] == "Deployment"}
    object_names = {f"{d['metadata']['name']}:{d['kind'].lower()}" for d in rendered}
    for resource in calls.get("k8s_resource", []):
        expect(
            resource["workload"] in workloads,
            f"k8s_resource names {resource['workload']!r}, deployed: {sorted(workloads)}",
        )
        for selector in resource["objects"]:
            expect(
                selector in object_names,
                f"k8s_resource object {selector!r} is not in the rendered YAML",
            )
    chart_name = calls["helm"][0]["name"]
    expect(
        chart_name in workloads, f"helm release {chart_name!r} does not name the proxy's Deployment"
    )
    forwards = {pf for r in calls["k8s_resource"] for pf in r["port_forwards"]}
    expect(
        {"8080:8080", "9090:9090", "9400:9400"} <= forwards,
        f"port forwards {sorted(forwards)} miss 8080, 9090 or 9400",
    )
    expect(
        "k8s/dev-values.yaml" in calls["helm"][0]["values"],
        "the chart must be deployed with k8s/dev-values.yaml",
    )
    built = {c["ref"] for c in calls["docker_build"]}
    images = {
        c["image"].split(":")[0]
        for d in rendered
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    expect(
        images <= built,
        f"images {sorted(images - built)} are deployed but not built by the Tiltfile",
    )
    exchange = [r for r in calls["local_resource"] if "smoke-exchange" in r["cmd"]]
    expect(
        exchange and exchange[0]["trigger_mode"] == "TRIGGER_MODE_MANUAL",
        "the token exchange must be a manual button",
    )
    print(
        f"evaluated with context {context}; refused prod-cluster; {len(stubs.paths)} paths exist; "
        f"resources: {', '.join(sorted(workloads))}, {', '.join(r['name'] for r in calls['local_resource'])}"
    )


def docs(args):
    """Every repository path a guide mentions exists."""
    with open(args.doc, encoding="utf-8") as f:
        text = f.read()
    pattern = r"(?<![\w./-])((?:charts|k8s|\.ci|docs)/[\w./-]*[\w]|Dockerfile|Tiltfile)"
    mentioned = sorted(set(re.findall(pattern, text)))
    missing = [p for p in mentioned if not os.path.exists(p)]
    expect(not missing, f"{args.doc} mentions missing paths: {missing}")
    print(f"{len(mentioned)} paths mentioned, all present")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("kube-versions")
    p.add_argument("chart")
    p.set_defaults(run=kube_versions)
    p = sub.add_parser("core-objects")
    p.add_argument("rendered")
    p.add_argument("out")
    p.set_defaults(run=core_objects)
    p = sub.add_parser("extract-config")
    p.add_argument("rendered")
    p.add_argument("out")
    p.set_defaults(run=extract_config)
    p = sub.add_parser("assert-chart")
    p.add_argument("rendered")
    p.add_argument("--chart", required=True)
    p.add_argument("--values")
    p.add_argument("--require-kind", action="append")
    p.set_defaults(run=assert_chart)
    p = sub.add_parser("assert-local-cluster")
    p.set_defaults(run=assert_local_cluster)
    p = sub.add_parser("tiltfile")
    p.add_argument("tiltfile")
    p.add_argument("--rendered-dev", required=True)
    p.add_argument("--rendered-kustomize", required=True)
    p.set_defaults(run=tiltfile)
    p = sub.add_parser("docs")
    p.add_argument("doc")
    p.set_defaults(run=docs)
    args = parser.parse_args()
    try:
        args.run(args)
    except CheckError as problem:
        print(f"{args.command}: {problem}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
