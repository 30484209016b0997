"""The Flavor SPI on the wire (``Flavor/0.1.1``, plus our FlavorBatch).

Guarantee: ``FlavorService`` always serves FlavorBatch: over the object's own batch methods
where it has them, else over its single calls, at most ``BATCH_CONCURRENCY`` at once, and a
probe that raised answers UNKNOWN rather than failing the batch. ``FlavorClient`` is just another
``flavor.Extended``: one PrepareMany/HealthyMany where the daemon announces FlavorBatch (ours
always do), else one call per instance (InfraKit's plugins), decided here and nowhere else.
Limit: the client caches whether the daemon batches until ``forget()``.
"""

from __future__ import annotations

from typing import Any

from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.rpc.service import Method, Service, bounded
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON, InterfaceSpec, PluginError, ValidationError
from infrakit_runtime.spi.wire import ParamsError, Reader

# Drain may rightly take as long as a load balancer's deregistration delay (300 s by default) or a
# flavor's drain hook: the call waits up to this long, whatever the client's usual timeout.
DRAIN_TIMEOUT = 900.0


# --- service --------------------------------------------------------------------------------


async def _validate(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    await obj.validate(p.raw("Properties"), flavor.Allocation.from_wire(p.raw("Allocation")))
    return {"OK": True}


async def _prepare(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    spec = await obj.prepare(
        p.raw("Properties"),
        instance.Spec.from_wire(p.raw("Spec"), "Spec"),
        flavor.Allocation.from_wire(p.raw("Allocation")),
        flavor.Index.from_wire(p.raw("Index")),
    )
    return {"Spec": spec.to_wire()}


def _instance(p: Reader) -> instance.Description:
    return instance.Description.from_wire(p.raw("Instance"), "Instance")


async def _healthy(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    if isinstance(obj, flavor.Assessing):
        # Ours, additive: the reason rides beside the verdict; InfraKit's clients read Health only.
        answer = (await obj.assess_many(p.raw("Properties"), [_instance(p)]))[0]
        out: dict[str, Any] = {"Health": int(answer.health), "Reason": answer.reason}
        if answer.quorum is not None:
            out["Quorum"] = answer.quorum.to_wire()
        return out
    return {"Health": int(await obj.healthy(p.raw("Properties"), _instance(p)))}


async def _drain(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    await obj.drain(p.raw("Properties"), _instance(p))
    return {"OK": True}


async def prepare_each(obj: flavor.FlavorPlugin, properties: JSON, specs: list[instance.Spec],
                       allocation: flavor.Allocation, indices: list[flavor.Index]) -> list[instance.Spec | PluginError]:
    """``prepare_many`` over single ``prepare`` calls, bounded; a spec that failed gives its error."""
    results = await bounded([obj.prepare(properties, s, allocation, x) for s, x in zip(specs, indices, strict=True)])
    out: list[instance.Spec | PluginError] = []
    for r in results:
        if isinstance(r, instance.Spec):
            out.append(r)
        elif isinstance(r, PluginError):
            out.append(r)
        elif isinstance(r, Exception):
            out.append(PluginError(str(r)))
        else:
            raise r
    return out


async def healthy_each(obj: flavor.FlavorPlugin, properties: JSON,
                       descriptions: list[instance.Description]) -> list[flavor.Health]:
    """``healthy_many`` over single ``healthy`` calls, bounded; a probe that raised cannot tell: UNKNOWN."""
    results = await bounded([obj.healthy(properties, d) for d in descriptions])
    out: list[flavor.Health] = []
    for r in results:
        if isinstance(r, Exception):
            out.append(flavor.Health.UNKNOWN)
        elif isinstance(r, BaseException):
            raise r
        else:
            out.append(flavor.Health(r))
    return out


async def _prepare_many(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    raw_specs, raw_indices = p.raw("Specs"), p.raw("Indices")
    if not isinstance(raw_specs, list) or not isinstance(raw_indices, list) or len(raw_specs) != len(raw_indices):
        raise ParamsError("Specs and Indices must be arrays of the same length")
    props, allocation = p.raw("Properties"), flavor.Allocation.from_wire(p.raw("Allocation"))
    specs = [instance.Spec.from_wire(s, f"Specs[{i}]") for i, s in enumerate(raw_specs)]
    indices = [flavor.Index.from_wire(x, f"Indices[{i}]") for i, x in enumerate(raw_indices)]
    if isinstance(obj, flavor.Batch):
        results = await obj.prepare_many(props, specs, allocation, indices)
    else:
        results = await prepare_each(obj, props, specs, allocation, indices)
    return {"Results": [
        {"Spec": None, "Error": str(r)} if isinstance(r, PluginError) else {"Spec": r.to_wire(), "Error": None}
        for r in results
    ]}


async def _healthy_many(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    raw = p.raw("Instances")
    if not isinstance(raw, list):
        raise ParamsError("Instances must be an array of instance descriptions")
    props = p.raw("Properties")
    descriptions = [instance.Description.from_wire(d, f"Instances[{i}]") for i, d in enumerate(raw)]
    final = {"Final": True} if _probes_nothing(obj, props) else {}
    if isinstance(obj, flavor.Assessing):
        answers = await obj.assess_many(props, descriptions)
        if answers and all(a.final for a in answers):  # a flavor that learns it from its own members (combo)
            final = {"Final": True}
        out: dict[str, Any] = {"Healths": [int(a.health) for a in answers], "Reasons": [a.reason for a in answers],
                               **final}
        if any(a.quorum is not None for a in answers):
            out["Quorums"] = [a.quorum.to_wire() if a.quorum is not None else None for a in answers]
        return out
    if isinstance(obj, flavor.Batch):
        results = await obj.healthy_many(props, descriptions)
    else:
        results = await healthy_each(obj, props, descriptions)
    return {"Healths": [int(h) for h in results], **final}


def _probes_nothing(obj: flavor.FlavorPlugin, properties: JSON) -> bool:
    """Does the flavor say it probes nothing under ``properties`` (``flavor.Probing``)? Unsure is no."""
    if not isinstance(obj, flavor.Probing):
        return False
    try:
        return not obj.has_probe(properties)
    except Exception:  # Properties it cannot read: its verdicts say so, every pass
        return False


_EXAMPLE_INSTANCE = {"ID": "", "LogicalID": None, "Tags": None}


class FlavorService(Service):
    interface = flavor.INTERFACE
    methods = {
        "Flavor.Validate": Method(_validate, {"Type": "", "Properties": None, "Allocation": {"Size": 0, "LogicalIDs": None}}),
        "Flavor.Prepare": Method(
            _prepare,
            {
                "Type": "",
                "Properties": None,
                "Spec": instance.Spec().to_wire(),
                "Allocation": {"Size": 0, "LogicalIDs": None},
                "Index": {"Group": "", "Sequence": 0},
            },
        ),
        "Flavor.Healthy": Method(_healthy, {"Type": "", "Properties": None, "Instance": _EXAMPLE_INSTANCE}),
        "Flavor.Drain": Method(_drain, {"Type": "", "Properties": None, "Instance": _EXAMPLE_INSTANCE}),
        # Our batch extension: one round trip per reconcile instead of one per instance.
        "Flavor.PrepareMany": Method(_prepare_many, {"Type": "", "Properties": None, "Specs": [], "Indices": [],
                                                     "Allocation": {"Size": 0, "LogicalIDs": None}}),
        "Flavor.HealthyMany": Method(_healthy_many, {"Type": "", "Properties": None, "Instances": []}),
    }

    def extra_interfaces(self) -> list[InterfaceSpec]:
        return [flavor.BATCH_INTERFACE]


# --- client ---------------------------------------------------------------------------------


class FlavorClient:
    """``flavor.Extended`` over JSON-RPC, using FlavorBatch when the daemon announces it."""

    def __init__(self, client: Client, type_: str = "") -> None:
        self.client = client
        self.type = type_
        self._batch: bool | None = None

    async def _batches(self) -> bool:
        if self._batch is None:
            self._batch = str(flavor.BATCH_INTERFACE) in await self.client.hello()
        return self._batch

    def forget(self) -> None:
        """Forget whether the daemon batches: the next batch asks its handshake again."""
        self._batch = None

    async def _call(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        try:
            return await self.client.call(method, {"Type": self.type, **params}, timeout=timeout)
        except RemoteError as e:
            if method == "Flavor.Validate":
                raise ValidationError(e.message) from None
            raise PluginError(e.message) from None

    async def prepare_many(self, properties: JSON, specs: list[instance.Spec], allocation: flavor.Allocation,
                           indices: list[flavor.Index]) -> list[instance.Spec | PluginError]:
        """Prepare many specs in one call (batch daemons) or one call each (InfraKit's plugins)."""
        if not await self._batches():
            return await prepare_each(self, properties, specs, allocation, indices)
        result = await self._call("Flavor.PrepareMany", {
            "Properties": properties, "Specs": [s.to_wire() for s in specs],
            "Allocation": allocation.to_wire(), "Indices": [i.to_wire() for i in indices],
        })
        return [PluginError(r["Error"]) if r.get("Error") else instance.Spec.from_wire(r.get("Spec"))
                for r in result.get("Results") or []]

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        """Health of many instances in one call (batch daemons) or bounded single calls."""
        return [a.health for a in await self.assess_many(properties, descriptions)]

    async def assess_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Assessment]:
        """``healthy_many`` with the reasons a daemon gives (our additive ``Reason``/``Reasons``; empty from
        plugins that give none, such as InfraKit's)."""
        if not await self._batches():
            out: list[flavor.Assessment] = []
            for r in await bounded([self._assess(properties, d) for d in descriptions]):
                if isinstance(r, flavor.Assessment):
                    out.append(r)
                elif isinstance(r, Exception):  # a probe that raised cannot tell
                    out.append(flavor.Assessment(flavor.Health.UNKNOWN, f"no verdict: {r}"))
                else:
                    raise r
            return out
        result = await self._call("Flavor.HealthyMany", {"Properties": properties,
                                                         "Instances": [d.to_wire() for d in descriptions]})
        reasons = result.get("Reasons")
        reasons = reasons if isinstance(reasons, list) else []
        quorums = result.get("Quorums")
        quorums = quorums if isinstance(quorums, list) else []
        final = result.get("Final") is True  # ours, additive: the flavor probes nothing, the verdicts never change
        return [flavor.Assessment(_health(h), _reason(reasons[i] if i < len(reasons) else None),
                                  flavor.Quorum.from_wire(quorums[i] if i < len(quorums) else None), final=final)
                for i, h in enumerate(result.get("Healths") or [])]

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        await self._call("Flavor.Validate", {"Properties": properties, "Allocation": allocation.to_wire()})

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        result = await self._call("Flavor.Prepare", {
            "Properties": properties, "Spec": spec.to_wire(),
            "Allocation": allocation.to_wire(), "Index": index.to_wire(),
        })
        return instance.Spec.from_wire(result.get("Spec"))

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        return (await self._assess(properties, description)).health

    async def _assess(self, properties: JSON, description: instance.Description) -> flavor.Assessment:
        result = await self._call("Flavor.Healthy", {"Properties": properties, "Instance": description.to_wire()})
        return flavor.Assessment(_health(result.get("Health", 0)), _reason(result.get("Reason")),
                                 flavor.Quorum.from_wire(result.get("Quorum")))

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        await self._call("Flavor.Drain", {"Properties": properties, "Instance": description.to_wire()},
                         timeout=max(self.client.timeout, DRAIN_TIMEOUT))


def _health(value: Any) -> flavor.Health:
    try:
        return flavor.Health(int(value))
    except (TypeError, ValueError):
        return flavor.Health.UNKNOWN


def _reason(value: Any) -> str:
    return value if isinstance(value, str) else ""
