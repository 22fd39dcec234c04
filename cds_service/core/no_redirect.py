"""An HTTP session that never follows a redirect: for JWKS fetches and fhirServer queries alike."""

from __future__ import annotations

import requests


class NoRedirectSession(requests.Session):
    """A Session that never follows a redirect, whatever `allow_redirects` says."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None
