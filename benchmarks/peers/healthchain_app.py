"""HealthChain 0.16.1 serving its documented patient-view hook over the same prefetch.

Runs in benchmarks/.venv-peers (never in the project's venv):
    benchmarks/.venv-peers/bin/python -m uvicorn healthchain_app:app --app-dir benchmarks/peers
which is what `healthchain serve healthchain_app:app` runs. The hook follows HealthChain's documented
pattern: `CdsFhirAdapter().parse(request)` turns every prefetched resource into fhir.resources objects
(R4B, the data's version, set with the documented `set_default_version`), then one card is returned
with `adapter.format`. No clinical logic runs, so this is a lower bound for a HealthChain service.
"""

from __future__ import annotations

from healthchain.fhir.version import set_default_version
from healthchain.gateway import HealthChainAPI
from healthchain.gateway.cds import CDSHooksService
from healthchain.io import CdsFhirAdapter
from healthchain.models.requests.cdsrequest import CDSRequest
from healthchain.models.responses.cdsresponse import Card, CDSResponse

set_default_version("R4B")

app = HealthChainAPI(title="HealthChain peer", description="benchmark peer")
cds = CDSHooksService()
adapter = CdsFhirAdapter()


@cds.hook("patient-view", id="osteoporosis-escalation", title="Osteoporosis escalation (peer)")
def patient_view(request: CDSRequest) -> CDSResponse:
    document = adapter.parse(request)
    resources = document.fhir.prefetch_resources or {}
    entries = sum(len(getattr(value, "entry", None) or []) for value in resources.values())
    document.cds.cards = [
        Card(
            summary=f"HealthChain peer: {entries} prefetched entries parsed",
            indicator="info",
            source={"label": "HealthChain peer"},
        )
    ]
    return adapter.format(document)


app.register_service(cds)
