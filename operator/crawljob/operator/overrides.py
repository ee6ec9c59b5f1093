"""What a CrawlJob's ``jobTemplate`` may override, as the operator's settings allow (pure: no I/O).

Anyone allowed to create CrawlJobs would otherwise run any image, as any service account of the
namespace, with any secret in its env. A refused override fails the CrawlJob with reason
`OverrideNotAllowed` and a message naming the field and the setting that allows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crawljob.operator.settings import OperatorSettings

REASON = "OverrideNotAllowed"


def image_allowed(image: str, settings: OperatorSettings) -> bool:
    """The worker image, a listed image, or one under a listed ``prefix*``."""
    if image == settings.worker_image:
        return True
    for allowed in settings.allowed_images:
        if allowed.endswith("*") and image.startswith(allowed[:-1]):
            return True
        if image == allowed:
            return True
    return False


def override_refusal(spec: Mapping[str, Any], settings: OperatorSettings) -> str | None:
    """Why *spec*'s jobTemplate asks for more than the settings allow, or None."""
    template = spec.get("jobTemplate") or {}
    if not isinstance(template, Mapping):
        return None
    image = template.get("image")
    if image and not image_allowed(str(image), settings):
        return (
            f"spec.jobTemplate.image {str(image)[:200]!r} is not allowed: the operator runs only its "
            "worker image and those in operator.allowedImages (CRAWLJOB_ALLOWED_IMAGES)"
        )
    account = template.get("serviceAccountName")
    if account and account != settings.worker_service_account and not settings.allow_service_account_override:
        return (
            "spec.jobTemplate.serviceAccountName is not allowed: workers run as the chart's worker "
            "service account unless operator.allowServiceAccountOverride is true"
        )
    if template.get("env") and not settings.allow_env_override:
        return (
            "spec.jobTemplate.env is not allowed: worker env comes from worker.env unless "
            "operator.allowEnvOverride is true"
        )
    return None
