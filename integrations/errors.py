"""Error tree for adapters: retry what is transient, dead-letter what is permanent."""


class RadpathError(Exception):
    """Base of radpath's own errors. Messages never carry patient identifiers."""


class TransientError(RadpathError):
    """Worth retrying: timeouts, refused connections, busy peers."""


class PermanentError(RadpathError):
    """Retrying cannot help: invalid input, rejected message, missing configuration."""


class InvalidInput(PermanentError):
    """Inbound data that breaks its standard (HL7, DICOM, FHIR)."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (TransientError, TimeoutError, ConnectionError))
