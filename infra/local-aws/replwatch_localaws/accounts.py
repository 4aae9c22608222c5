"""Which account a request acts as.

moto 5.2.5 (``moto.core.responses.BaseResponse.get_current_account``) picks the
account of every request in this order:

1. ``MOTO_ACCOUNT_ID`` in the *server's* environment (never set by ``start``:
   it would pin every request to one account);
2. an ``x-moto-account-id`` request header;
3. the access key id of the SigV4 ``Authorization`` header, if moto issued it:
   STS ``AssumeRole`` into ``arn:aws:iam::222222222222:role/x`` returns
   credentials whose key belongs to account 222222222222 (the role need not
   exist), exactly like assuming a cross-account role on AWS;
4. otherwise the default account ``123456789012``.

Added here, between 2 and 3: an access key id that is exactly 12 digits
selects that account (``AWS_ACCESS_KEY_ID=111111111111``). moto ignores such a
key (it only recognises 20-character keys), so without this a process that
runs "as account A" would need AssumeRole or a custom header. AWS has no such
thing; it stands in for "these are account A's own credentials".
"""

from __future__ import annotations

import re
from typing import Any

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_ACCOUNT_KEY = re.compile(r"[0-9]{12}")


def account_from_authorization(authorization: str | None) -> str | None:
    if not authorization:
        return None
    match = _CREDENTIAL.search(authorization)
    if match and _ACCOUNT_KEY.fullmatch(match.group(1)):
        return match.group(1)
    return None


def install() -> None:
    import os

    from moto.core.responses import BaseResponse

    original = BaseResponse.get_current_account

    def get_current_account(self: Any) -> str:
        if "MOTO_ACCOUNT_ID" in os.environ or "x-moto-account-id" in self.headers:
            return original(self)
        account = account_from_authorization(self.headers.get("Authorization"))
        return account or original(self)

    BaseResponse.get_current_account = get_current_account  # type: ignore[method-assign]
