#!/usr/bin/env bash
# Debian packages the tests talk to: dcmtk (modality), dicom3tools (dciodvfy), Orthanc + DICOMweb (PACS),
# headless Chromium + chromedriver (the Prefect UI browser test), PostgreSQL (the scale-out tests start
# their own throwaway clusters; the packaged service is stopped), mricron-data (Colin27, a real T1 brain
# for the dementia model's real-data test).
# Installs only when running as root with apt-get; otherwise says what is missing.
set -euo pipefail
packages=(dcmtk dicom3tools orthanc orthanc-dicomweb chromium chromium-driver postgresql mricron-data)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # The orthanc package starts a system service; tests start their own Orthanc on free ports.
  if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then systemctl stop orthanc || true; fi
  if command -v service >/dev/null; then service orthanc stop >/dev/null 2>&1 || true; fi
  if command -v service >/dev/null; then service postgresql stop >/dev/null 2>&1 || true; fi
else
  echo "missing Debian packages (install them as root): ${missing[*]}" >&2
fi
