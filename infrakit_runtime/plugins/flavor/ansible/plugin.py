"""Ansible flavor: an instance counts as healthy only once a playbook has configured it.

Guarantee: the playbook runs through ansible-runner once per instance and config hash (the
``infrakit.config.hash`` tag the controller puts on every member), in the background:
Healthy never waits for a run. It answers UNKNOWN while the run is queued or in progress,
HEALTHY once it succeeded and the wrapped flavor's health check (``Flavor``), if any, passes,
and UNHEALTHY with the failing task's name and message once every attempt (``Retries`` + 1)
failed - so the controller replaces the instance under the group's thresholds, backoff and
max-unhealthy brake, and a rollout whose playbook fails stalls with the old members serving.
Each answer carries its reason (our additive ``Reason``/``Reasons`` fields), which the
controller shows in the group's events and ``infrakit group describe``. Drain cancels a run in
progress, then runs the ``Drain`` playbook (with its own timeout, retried like the
configuration) and raises, naming the failing task, when every attempt failed.

Why a tag, and how it gets there: a successful run is recorded on the instance itself, as
``infrakit.ansible.configured=<config hash>``, so that neither a restarted flavor daemon nor the
flavor daemon of a new leader on another host runs the playbook again - the instance plugin
(the cloud) is the one record every replica shares, as it is for membership. A flavor does not
own the instance plugin, and asking the user to repeat the group's ``Instance.Plugin`` in the
flavor's Properties would let the two disagree; so the flavor reads it from the group's
committed spec (``Group.InspectGroups`` on the manager's socket, found by the instance's
``infrakit.group`` tag) and calls that plugin's ``Instance.Label``, through injected lookups.
The tag merges into the instance's tags and is no part of the config hash: it never triggers
a rollout.

Limit: a run is at-least-once. If the daemon dies mid-run, or before the tag is written, the
next daemon runs the playbook again: playbooks must be idempotent, as Ansible's are meant to
be. Validate runs ``ansible-playbook --syntax-check`` on the flavor's host; it cannot know
whether the instances will be reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.plugins.flavor.ansible import hosts, props, runner, wiring
from infrakit_runtime.plugins.flavor.ansible.runs import MAX_RUNS, Phase, Pool, Run
from infrakit_runtime.spi import flavor, group, instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

log = logging.getLogger(__name__)

FlavorLookup = Callable[[str], flavor.FlavorPlugin]
InstanceLookup = Callable[[str], instance.InstancePlugin]
Execute = Callable[..., Awaitable[runner.RunResult]]
# After a failed Instance.Label, or a group the manager does not know, try again no sooner than this.
LABEL_RETRY = 5.0
# A syntax check slower than this says the machine is overloaded, not that the playbook is wrong.
SYNTAX_CHECK_TIMEOUT = 25.0


class AnsibleFlavor:
    """``FlavorPlugin`` (with ``assess_many``) that configures instances with a playbook.

    ``execute(job, attempt=, cancel=)`` runs one job (``runner.Executor.run`` in a daemon);
    ``flavors`` finds the wrapped flavor, ``instances`` the group's instance plugin and
    ``groups`` the manager, all by name.
    """

    def __init__(self, *, execute: Execute, flavors: FlavorLookup, instances: InstanceLookup,
                 groups: group.GroupPlugin | None, self_name: str = "",
                 clock: Callable[[], float] = time.monotonic, max_runs: int = MAX_RUNS,
                 syntax_check: Callable[[str, str | None], Awaitable[str | None]] | None = None) -> None:
        self.execute, self.flavors, self.instances, self.groups = execute, flavors, instances, groups
        self.self_name, self.clock = self_name, clock
        self.syntax_check = syntax_check or check_syntax
        self.pool = Pool(execute=execute, clock=clock, max_runs=max_runs)
        self.pool.on_done = self._configured
        self._plugins: dict[str, str] = {}
        self._plugins_read = float("-inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = threading.Event()

    def _props(self, properties: JSON) -> props.Properties:
        return props.parse(properties, strict=False, self_name=self.self_name)

    # -- Validate / Prepare ------------------------------------------------------------------

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        p = props.parse(properties, strict=True, self_name=self.self_name)
        missing = runner.available()
        if missing:
            raise ValidationError(f"this flavor cannot run playbooks: {missing}")
        problems, checks = await asyncio.to_thread(_file_problems, p)
        found = await asyncio.gather(*(self.syntax_check(pb, p.vault_password_file) for _, pb in checks))
        problems += [f"{field}: {error}" for (field, _), error in zip(checks, found, strict=True) if error]
        if p.inner is not None:
            try:
                await self.flavors(p.inner[0]).validate(p.inner[1], allocation)
            except PluginError as e:
                problems += [f"Properties.Flavor ({p.inner[0]}): {x}" for x in str(e).split("; ")]
        if problems:
            raise ValidationError(problems)

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        p = self._props(properties)
        if p.inner is None:
            return spec
        return await self.flavors(p.inner[0]).prepare(p.inner[1], spec, allocation, index)

    # -- Healthy ---------------------------------------------------------------------------------

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        return (await self.assess_many(properties, [description]))[0].health

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        return [a.health for a in await self.assess_many(properties, descriptions)]

    async def assess_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Assessment]:
        """Each instance's verdict: its run's phase, then (once configured) the wrapped flavor's check."""
        p = self._props(properties)
        out: list[flavor.Assessment | None] = [None] * len(descriptions)
        configured: list[int] = []
        for i, d in enumerate(descriptions):
            answer = self._configuration(p, d)
            if answer is None:
                configured.append(i)
            else:
                out[i] = answer
        if configured:
            inner = await self._inner([descriptions[i] for i in configured], p)
            for i, verdict in zip(configured, inner, strict=True):
                out[i] = self._with_inner(descriptions[i], verdict)
        return [a or flavor.Assessment() for a in out]

    def _configuration(self, p: props.Properties, d: instance.Description) -> flavor.Assessment | None:
        """The verdict while the instance's configuration is not done; None once it is."""
        config = hosts.config_of(d)
        if config is None:
            return flavor.Assessment(flavor.Health.UNKNOWN, "waiting for the controller to tag the instance with "
                                                            "its config hash (infrakit.config.hash) before configuring it")
        if hosts.configured(d):
            return None
        run = self.pool.get((d.id, config))
        if run is None:
            if not hosts.reachable(d, p.connection):
                return flavor.Assessment(flavor.Health.UNKNOWN, "waiting for the instance to report an address "
                                                                "(Properties.Address) to connect to over ssh")
            run = self.pool.ensure(self._job(p, d, config), attempts=p.retries + 1, concurrency=p.concurrency)
        else:
            self.pool.ensure(run.job, attempts=run.attempts, concurrency=p.concurrency)  # still wanted
        playbook = run.job.playbook
        name = props.label(playbook)
        if run.phase is Phase.QUEUED:
            ahead = self.pool.ahead_of(run)
            return flavor.Assessment(flavor.Health.UNKNOWN, f"configuration queued: playbook {name} waits for one "
                                                            f"of {p.concurrency} run slots ({ahead} queued ahead)")
        if run.phase is Phase.RUNNING:
            took = self.clock() - (run.started or self.clock())
            return flavor.Assessment(flavor.Health.UNKNOWN, f"configuring: playbook {name} running for {took:.0f}s "
                                                            f"(attempt {run.attempt} of {run.attempts})")
        if run.phase is Phase.RETRYING:
            assert run.result is not None
            return flavor.Assessment(flavor.Health.UNKNOWN, f"configuring: attempt {run.attempt} of {run.attempts} "
                                                            f"failed, retrying: {run.result.sentence(playbook)}")
        assert run.result is not None
        if run.phase is Phase.FAILED:
            tries = f" (attempt {run.attempt} of {run.attempts})" if run.attempts > 1 else ""
            return flavor.Assessment(flavor.Health.UNHEALTHY, run.result.sentence(playbook) + tries)
        self._tag_later(run)
        return None

    def _job(self, p: props.Properties, d: instance.Description, config: str) -> runner.Job:
        return runner.Job(purpose=runner.CONFIGURE, instance_id=d.id, config=config,
                          group=d.tags.get(instance.TAG_GROUP, ""), playbook=p.playbook, extra_vars=p.extra_vars,
                          host_vars=hosts.host_vars(d, p.connection), timeout=p.timeout,
                          vault_password_file=p.vault_password_file)

    async def _inner(self, descriptions: list[instance.Description], p: props.Properties) -> list[flavor.Assessment]:
        """The wrapped flavor's verdicts (HEALTHY for all when there is none)."""
        if p.inner is None:
            return [flavor.Assessment(flavor.Health.HEALTHY)] * len(descriptions)
        plugin, properties = p.inner
        inner = self.flavors(plugin)
        try:
            if isinstance(inner, flavor.Assessing):
                return list(await inner.assess_many(properties, descriptions))
            if hasattr(inner, "healthy_many"):
                return [flavor.Assessment(h) for h in await inner.healthy_many(properties, descriptions)]
            verdicts = await asyncio.gather(*(inner.healthy(properties, d) for d in descriptions))
            return [flavor.Assessment(h) for h in verdicts]
        except PluginError as e:
            log.warning("flavor %s gave no health verdict: %s", plugin, e)
            return [flavor.Assessment(flavor.Health.UNKNOWN, f"the wrapped flavor {plugin} gave no verdict: {e}")] \
                * len(descriptions)

    def _with_inner(self, d: instance.Description, verdict: flavor.Assessment) -> flavor.Assessment:
        config = hosts.config_of(d) or ""
        run = self.pool.get((d.id, config))
        done = (run.result.sentence(run.job.playbook) if run is not None and run.result is not None
                else f"configured for {config} ({hosts.TAG_CONFIGURED})")
        if verdict.health == flavor.Health.HEALTHY:
            return flavor.Assessment(flavor.Health.HEALTHY, verdict.reason or done)
        why = verdict.reason or ("its health check fails" if verdict.health == flavor.Health.UNHEALTHY
                                 else "its health check has no verdict yet")
        return flavor.Assessment(flavor.Health(verdict.health), f"configured, but {why}")

    # -- the tag -------------------------------------------------------------------------------

    def _configured(self, run: Run) -> None:
        """A run ended: tag the instance at once when it succeeded."""
        if run.phase is Phase.SUCCEEDED:
            self._tag_later(run)

    def _tag_later(self, run: Run) -> None:
        now = self.clock()
        if run.labelled or now - run.label_tried < LABEL_RETRY or self._closing.is_set():
            return
        run.label_tried = now
        task = asyncio.get_running_loop().create_task(self._tag(run), name=f"ansible/tag/{run.job.instance_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tag(self, run: Run) -> None:
        job = run.job
        try:
            name = await self._instance_plugin(job.group)
            if name is None:
                log.warning("cannot tag instance %s as configured: the manager knows no group %r; will retry",
                            job.instance_id, job.group)
                return
            await self.instances(name).label(job.instance_id, {hosts.TAG_CONFIGURED: job.config})
        except PluginError as e:
            log.warning("cannot tag instance %s as configured (%s=%s): %s; will retry", job.instance_id,
                        hosts.TAG_CONFIGURED, job.config, e)
            return
        run.labelled = True
        log.info("instance %s tagged %s=%s", job.instance_id, hosts.TAG_CONFIGURED, job.config)

    async def _instance_plugin(self, group_id: str) -> str | None:
        """The instance plugin of group ``group_id``, from its committed spec (re-read on a miss)."""
        if group_id not in self._plugins and self.groups is not None and self.clock() - self._plugins_read >= LABEL_RETRY:
            self._plugins_read = self.clock()
            found = {}
            for spec in await self.groups.inspect_groups():
                section = (spec.properties or {}).get("Instance") if isinstance(spec.properties, dict) else None
                if isinstance(section, dict) and isinstance(section.get("Plugin"), str):
                    found[spec.id] = section["Plugin"]
            self._plugins = found
        return self._plugins.get(group_id)

    # -- Drain ---------------------------------------------------------------------------------

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        p = self._props(properties)
        await self.pool.stop(description.id)
        if p.drain is not None:
            await self._drain(p, description)
        if p.inner is not None:
            await self.flavors(p.inner[0]).drain(p.inner[1], description)

    async def _drain(self, p: props.Properties, d: instance.Description) -> None:
        assert p.drain is not None
        job = runner.Job(purpose=runner.DRAIN, instance_id=d.id, config=hosts.config_of(d) or "none",
                         group=d.tags.get(instance.TAG_GROUP, ""), playbook=p.drain.playbook,
                         extra_vars={**p.extra_vars, **p.drain.extra_vars}, host_vars=hosts.host_vars(d, p.connection),
                         timeout=p.drain.timeout, vault_password_file=p.vault_password_file)
        attempts = p.retries + 1
        for attempt in range(1, attempts + 1):
            result = await self.execute(job, attempt=attempt, cancel=self._closing)
            if result.succeeded:
                log.info("drained instance %s: %s", d.id, result.sentence(job.playbook))
                return
            log.warning("drain of instance %s, attempt %d of %d: %s", d.id, attempt, attempts,
                        result.sentence(job.playbook))
            if attempt < attempts and not self._closing.is_set():
                await asyncio.sleep(props.retry_delay(attempt))
        raise PluginError(f"drain of instance {d.id} failed after {attempts} attempt(s): {result.sentence(job.playbook)}")

    async def close(self) -> None:
        self._closing.set()
        await self.pool.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _file_problems(p: props.Properties) -> tuple[list[str], list[tuple[str, str]]]:
    """What is missing on this host, and the (field, playbook) pairs worth a syntax check."""
    problems: list[str] = []
    for field, path in (("Properties.VaultPasswordFile", p.vault_password_file),
                        ("Properties.Connection.PrivateKeyFile", p.connection.private_key_file)):
        if path is not None and not os.access(path, os.R_OK):
            problems.append(f"{field}: {path} does not exist or this flavor cannot read it")
    checks = []
    for field, playbook in p.playbooks():
        if not props.is_fqcn(playbook) and not os.path.isfile(playbook):
            problems.append(f"{field}: {playbook} does not exist on the flavor's host (or is not a file)")
        else:
            checks.append((field, playbook))
    return problems, checks


async def check_syntax(playbook: str, vault_password_file: str | None) -> str | None:
    """``ansible-playbook --syntax-check``'s complaint about ``playbook``, or None when it parses."""
    env = {**os.environ, **runner.ansible_env()}
    argv = ["ansible-playbook", "--syntax-check", "-i", "localhost,", playbook]
    if vault_password_file:
        argv += ["--vault-password-file", vault_password_file]
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    env=env, start_new_session=True)
    except OSError as e:
        return f"cannot run ansible-playbook --syntax-check: {e.strerror}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SYNTAX_CHECK_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return None  # no verdict in time: the runs will say what is wrong, if anything
    if proc.returncode == 0:
        return None
    text = out.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = " ".join((runner.errors(text) or lines[-1:] or [f"it exits with status {proc.returncode}"])[:3])
    return f"ansible-playbook --syntax-check refuses it: {text[:600]}"


@dataclasses.dataclass(frozen=True)
class Options:
    """The daemon's options: the manager's socket name (to find a group's instance plugin), and how many
    playbook runs the daemon allows at once over every group (each group's Concurrency applies within)."""

    group: str = "group"
    max_runs: int = MAX_RUNS

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Options:
        problems = [f"unknown option {k!r} for the ansible flavor; known: group, max_runs"
                    for k in sorted(set(raw) - {"group", "max_runs"}, key=str)]
        name = raw.get("group", "group")
        if not isinstance(name, str) or not name:
            problems.append(f"option group must name the manager's socket, got {name!r}")
        limit = raw.get("max_runs", MAX_RUNS)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            problems.append(f"option max_runs must be an integer from 1 to 1000, got {limit!r}")
        if problems:
            raise ValidationError(problems)
        return cls(group=name, max_runs=limit)


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """The daemon: runs under ``$INFRAKIT_HOME/ansible/<name>/`` (``runs/<instance>/`` keeps each run's log)."""
    options = Options.parse(ctx.options)
    missing = runner.available()
    if missing:
        raise ValidationError(f"the ansible flavor cannot start: {missing}")
    executor = runner.Executor(Path(ctx.state_dir(f"ansible/{ctx.name}")))
    lookups = wiring.Lookups(ctx.plugins_dir, group=options.group)
    plugin = AnsibleFlavor(execute=executor.run, flavors=lookups.flavor, instances=lookups.instance,
                           groups=lookups.groups, self_name=ctx.name, max_runs=options.max_runs)
    try:
        yield Served(services=[wiring.service(plugin)])
    finally:
        await plugin.close()
        executor.close()
        await lookups.close()
