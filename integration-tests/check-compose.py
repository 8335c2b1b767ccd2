#!/usr/bin/env python3
"""Offline checks of docker-compose.yml, the Dockerfile and the Prometheus compose config.

- the YAML parses; the expected services exist; images are pinned (a tag, never :latest);
- every long-running service has a healthcheck; every depends_on names a service and a
  condition it can meet (service_healthy needs a healthcheck);
- files mounted from the repository exist;
- the compose broker runs the Apache Kafka major.minor that scripts/kafka/pom.xml pins;
- prometheus/prometheus.docker.yml scrapes the app services by compose name and port;
- every env var set on api-gateway / log-consumer is one the binary reads: its crate's
  sources declare it (clap `env = "NAME"` or std::env::var("NAME")); RUST_LOG counts as read
  when the crate builds a tracing EnvFilter. A crate not written yet is reported, not failed.

Prints one line per check and "compose: N passed, M failed"; exits 1 on any failure.
Needs PyYAML (python3-yaml).
"""

import os
import re
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
APPS = {"api-gateway": 8080, "log-consumer": 8081}
EXPECTED = {"kafka", "kafka-init", "postgres", "redis", "prometheus", "grafana", *APPS}
ONE_SHOT = {"kafka-init"}

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}")


def crate_env_names(crate):
    """Env var names the crate's sources read, or None when the crate does not exist."""
    src = os.path.join(ROOT, "crates", crate, "src")
    if not os.path.isdir(src):
        return None
    names, text = set(), ""
    # The crate's own sources plus those of the workspace crates it depends on (shared
    # plumbing such as service-runtime reads RUST_LOG for both services).
    folders = [src]
    with open(os.path.join(ROOT, "crates", crate, "Cargo.toml"), encoding="utf-8") as fh:
        for dep in re.findall(r'^([a-z0-9_-]+)\.workspace\s*=\s*true', fh.read(), re.M):
            dep_src = os.path.join(ROOT, "crates", dep, "src")
            if os.path.isdir(dep_src):
                folders.append(dep_src)
    for top in folders:
        for folder, _, files in os.walk(top):
            for f in files:
                if f.endswith(".rs"):
                    with open(os.path.join(folder, f), encoding="utf-8") as fh:
                        text += fh.read() + "\n"
    names |= set(re.findall(r'\benv\s*=\s*"([A-Z0-9_]+)"', text))
    names |= set(re.findall(r'env::var(?:_os)?\(\s*"([A-Z0-9_]+)"', text))
    if "EnvFilter" in text or "RUST_LOG" in text:
        names.add("RUST_LOG")
    return names


def main():
    with open(os.path.join(ROOT, "docker-compose.yml"), encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    check(isinstance(compose, dict) and isinstance(compose.get("services"), dict), "docker-compose.yml parses, has services")
    services = compose["services"]
    check(EXPECTED <= set(services), f"services present: {', '.join(sorted(EXPECTED))}"
          + (f" (missing {', '.join(sorted(EXPECTED - set(services)))})" if not EXPECTED <= set(services) else ""))

    # The compose broker is the same Apache Kafka major.minor as the one scripts/kafka.sh runs.
    with open(os.path.join(ROOT, "scripts", "kafka", "pom.xml"), encoding="utf-8") as f:
        native = re.search(r"<kafka.version>([0-9]+\.[0-9]+)\.", f.read()).group(1)
    for name in ("kafka", "kafka-init"):
        image = services.get(name, {}).get("image", "")
        check(image.startswith("apache/kafka:" + native + "."),
              f"{name}: apache/kafka {native}.x like scripts/kafka/pom.xml ({image})")

    for name, svc in sorted(services.items()):
        image = svc.get("image", "")
        if "build" in svc:
            check(bool(image) and not image.endswith(":latest"), f"{name}: built image has a local tag ({image})")
        else:
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            check(bool(tag) and tag != "latest", f"{name}: image pinned ({image})")
        if name not in ONE_SHOT:
            check(bool(svc.get("healthcheck", {}).get("test")), f"{name}: has a healthcheck")
        for dep, cond in (svc.get("depends_on") or {}).items():
            condition = cond.get("condition") if isinstance(cond, dict) else None
            check(dep in services, f"{name}: depends_on {dep} exists")
            if condition == "service_healthy":
                check("healthcheck" in services.get(dep, {}), f"{name}: {dep} has the healthcheck service_healthy waits for")
            elif condition == "service_completed_successfully":
                check(dep in ONE_SHOT, f"{name}: {dep} is a one-shot service")
            else:
                check(False, f"{name}: depends_on {dep} has a condition (got {condition!r})")
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("./"):
                check(os.path.exists(os.path.join(ROOT, src)), f"{name}: mounted {src} exists")

    for app, port in APPS.items():
        svc = services.get(app, {})
        command = svc.get("command")
        check(command in ([app], app), f"{app}: command selects the {app} binary")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        addr_var = "GATEWAY_ADDR" if app == "api-gateway" else "CONSUMER_ADDR"
        check(str(env.get(addr_var, "")).endswith(f":{port}"), f"{app}: {addr_var} listens on {port}")
        known = crate_env_names(app)
        if known is None:
            print(f"note  {app}: crates/{app} does not exist yet: env names not checked ({', '.join(sorted(env))})")
            continue
        for var in sorted(env):
            check(var in known, f"{app}: env {var} is read by crates/{app}")

    with open(os.path.join(ROOT, "prometheus", "prometheus.docker.yml"), encoding="utf-8") as f:
        prom = yaml.safe_load(f)
    targets = {}
    for job in prom.get("scrape_configs", []):
        for sc in job.get("static_configs", []):
            targets.setdefault(job["job_name"], []).extend(sc.get("targets", []))
    for app, port in APPS.items():
        check(targets.get(app) == [f"{app}:{port}"], f"prometheus.docker.yml scrapes job {app} at {app}:{port}")
    prom_svc = services.get("prometheus", {})
    mounts = [v.split(":")[1] for v in prom_svc.get("volumes", []) if isinstance(v, str) and v.startswith("./")]
    for rule_file in prom.get("rule_files", []):
        path = rule_file if rule_file.startswith("/") else "/etc/prometheus/" + rule_file
        check(path in mounts, f"prometheus: rule file {rule_file} is mounted at {path}")

    with open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8") as f:
        dockerfile = f.read()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    check(froms[:1] == ["rust:1.95-bookworm"] and froms[-1:] == ["debian:bookworm-slim"],
          f"Dockerfile: rust:1.95-bookworm builder, debian:bookworm-slim runtime (got {froms})")
    for app in APPS:
        check(f"--bin {app}" in dockerfile, f"Dockerfile builds {app}")

    print(f"compose: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
