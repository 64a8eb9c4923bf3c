"""Standard Webhooks signatures (https://www.standardwebhooks.com), with the ``standardwebhooks``
library — the only module that imports it.

Every attempt carries ``webhook-id`` (the delivery's id: the same on every retry and redelivery,
so receivers can drop duplicates), ``webhook-timestamp`` (the attempt's time, epoch seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` keyed with the
site's ``whsec_…`` secret).
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def signed_headers(secret: str, message_id: str, body: str, at: float) -> dict[str, str]:
    when = datetime.fromtimestamp(int(at), tz=UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": Webhook(secret).sign(message_id, when, body),
        "Content-Type": "application/json",
    }
