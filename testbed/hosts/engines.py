"""The Docker engines a run's containers go on: the local one, or `--engine NAME=URL` ones.

An engine is a client plus the address the runner reaches its published ports at:
127.0.0.1 for an engine on this machine (a unix socket), the URL's host for
`tcp://HOST:PORT` (TLS from DOCKER_CERT_PATH / DOCKER_TLS_VERIFY, as the docker CLI)
and `ssh://USER@HOST`, or what `NAME=URL@ADDRESS` says. `context:NAME` takes a
Docker context's endpoint and TLS material. Hosts are spread over the engines
(`spread`); every engine gets the run's images from the local engine if it lacks
them (`docker save | docker load`, streamed), and its hosts get xsmig copied in
(`put_archive`) rather than bind-mounted: a remote engine cannot see the runner's
files. Ports are published on the engine's address only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from testbed.errors import TestbedError
from testbed.hosts.facade import LOOPBACK

LOCAL = "local"  # NAME=local: the engine DOCKER_HOST (or the default socket) names


class EngineError(TestbedError):
    pass


@dataclass(frozen=True)
class Engine:
    name: str
    client: Any
    address: str = LOOPBACK  # where the runner reaches this engine's published ports
    copy_sources: bool = False  # bind mounts need the runner's file system: remote engines copy

    def describe(self) -> str:
        return f"engine {self.name} ({self.address})"


@dataclass(frozen=True)
class EngineSpec:
    name: str
    url: str  # "local", "context:NAME", unix://, tcp://, ssh://
    address: str | None = None


def parse_engine(text: str) -> EngineSpec:
    """`NAME=URL` or `NAME=URL@ADDRESS` (ADDRESS: where its published ports are reached)."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise EngineError(f"--engine {text!r}: expected NAME=URL (e.g. far=tcp://10.0.0.5:2376)")
    address = None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if "@" in url and (scheme != "ssh" or url.count("@") > 1):
        url, _, address = url.rpartition("@")
    if url != LOCAL and not url.startswith("context:") and scheme not in ("unix", "tcp", "ssh"):
        raise EngineError(
            f"--engine {text!r}: URL must be unix://, tcp://, ssh://, context:NAME or local"
        )
    return EngineSpec(name, url, address)


def _address(url: str) -> str:
    """Where a URL's published ports are reached when nothing else is said."""
    parts = urlsplit(url)
    if parts.scheme in ("tcp", "ssh", "http", "https") and parts.hostname:
        return parts.hostname
    return LOOPBACK


def connect(spec: EngineSpec) -> Engine:
    import docker

    from testbed.images.engine import docker_client

    try:
        if spec.url == LOCAL:
            return Engine(spec.name, docker_client(), spec.address or LOOPBACK)
        if spec.url.startswith("context:"):
            from docker.context import ContextAPI

            ctx = ContextAPI.get_context(spec.url.removeprefix("context:"))
            if ctx is None:
                raise EngineError(f"engine {spec.name}: no Docker context {spec.url[8:]!r}")
            with _engine_ca_only():
                client = docker.DockerClient(base_url=ctx.Host, tls=ctx.TLSConfig)
            url = str(ctx.Host)
        elif spec.url.startswith("tcp://") and os.environ.get("DOCKER_TLS_VERIFY"):
            with _engine_ca_only():
                client = docker.DockerClient(
                    base_url=spec.url,
                    tls=docker.tls.TLSConfig(
                        client_cert=_certs("cert.pem", "key.pem"),
                        ca_cert=_certs("ca.pem")[0],
                        verify=True,
                    ),
                )
            url = spec.url
        else:
            client = docker.DockerClient(base_url=spec.url, use_ssh_client=True)
            url = spec.url
        if isinstance(client.api.verify, str):  # TLS with the engine's CA: see below
            client.api.trust_env = False
        client.ping()
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(f"engine {spec.name} ({spec.url}) does not answer: {exc}") from exc
    return Engine(spec.name, client, spec.address or _address(url), copy_sources=True)


@contextlib.contextmanager
def _engine_ca_only() -> Iterator[None]:
    """The engine's own CA, as the docker CLI uses it. requests lets REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE (set on many machines) replace a session's CA file, and would refuse
    the engine; the client is built without them (its first request, the API version,
    happens here), and made to ignore the environment afterwards (trust_env)."""
    saved = {k: os.environ.pop(k) for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
             if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _certs(*names: str) -> tuple[str, ...]:
    base = os.environ.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
    return tuple(os.path.join(base, n) for n in names)


def connect_all(specs: Sequence[EngineSpec]) -> list[Engine]:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise EngineError(f"--engine names must differ: {', '.join(names)}")
    return [connect(s) for s in specs]


def spread(names: Sequence[str], engines: Sequence[Engine]) -> dict[str, Engine]:
    """Hosts over engines in turn, in name order: the same placement on every runner."""
    return {n: engines[i % len(engines)] for i, n in enumerate(sorted(names))}


def ensure_image(engine: Engine, tag: str, local: Any, say: Callable[[str], None]) -> None:
    """The image `tag` on `engine`: there already, or streamed from the local engine."""
    if engine.client is local:
        return
    with contextlib.suppress(Exception):
        engine.client.images.get(tag)
        return
    say(f"{engine.describe()}: loading {tag} from the local engine")
    try:
        engine.client.images.load(local.images.get(tag).save(named=True))
        engine.client.images.get(tag)
    except Exception as exc:
        raise EngineError(f"{engine.describe()}: cannot load {tag}: {exc}") from exc
