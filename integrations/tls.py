"""TLS on the inbound doors (MLLP, DICOM, HTTP): one server context from the settings.

With `tls_cert_file` and `tls_key_file` set, every listener speaks TLS 1.2 or later only; with
`tls_client_ca_file` too, a client must present a certificate issued by that CA (mutual TLS,
as IHE ATNA's secure node asks). Without them the doors are plain TCP, for loopback and the demo.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from integrations.settings import ConfigurationError as TlsConfigurationError


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigurationError(f"RADPATH_TLS_CERT_FILE / RADPATH_TLS_KEY_FILE: cannot load the certificate "
                                        f"and key ({exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc})"
                                        ) from None
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigurationError(f"RADPATH_TLS_CLIENT_CA_FILE={self.client_ca_file}: cannot load "
                                            f"({exc.__class__.__name__})") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def server_tls(settings) -> ServerTls | None:  # noqa: ANN001 - integrations.settings.Settings
    """The inbound TLS configuration, or None for plain TCP."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        if settings.tls_client_ca_file is not None:
            raise TlsConfigurationError("RADPATH_TLS_CLIENT_CA_FILE needs RADPATH_TLS_CERT_FILE and RADPATH_TLS_KEY_FILE")
        return None
    if cert is None or key is None:
        raise TlsConfigurationError("RADPATH_TLS_CERT_FILE and RADPATH_TLS_KEY_FILE go together: set both or neither")
    return ServerTls(cert, key, settings.tls_client_ca_file)


def server_context(settings) -> ssl.SSLContext | None:  # noqa: ANN001
    tls = server_tls(settings)
    return tls.context() if tls else None
