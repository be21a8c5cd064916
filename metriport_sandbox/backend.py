"""The emulator's backend: the shared `Core` and the operation families it composes (one method per
Metriport API operation, no HTTP). Each family owns its operations and reaches the shared state only
through the `Core` it is given; only this module knows them all and wires the one call between them
(a finished document query may complete a bulk import).
"""

from __future__ import annotations

from metriport_sandbox.config import SandboxConfig
from metriport_sandbox.core import Core
from metriport_sandbox.ops_bulk import BulkOps
from metriport_sandbox.ops_consolidated import ConsolidatedOps
from metriport_sandbox.ops_documents import DocumentOps
from metriport_sandbox.state import Patient, Tenant


class Backend(Core):
    def __init__(self, config: SandboxConfig | None = None) -> None:
        super().__init__(config)
        self.documents = DocumentOps(self, on_query_finished=self._document_query_finished)
        self.consolidated = ConsolidatedOps(self)
        self.bulk = BulkOps(self, self.documents.start_document_query)

    def _document_query_finished(self, tenant: Tenant, patient: Patient) -> None:
        self.bulk.document_query_finished(tenant, patient)
