"""The capacity layer between `gateway/` and `stream/` (issue 19).

Two lanes from the socket on: readings that can raise a critical or high alert
(BP, glucose, SpO2 devices) have their own MQTT session and their own stream
core, so they never queue behind ECG telemetry (`lanes.py`); ECG frames are
stored and acknowledged on the other lane, and analysed from the reading
store behind their acknowledgement, at whatever pace the CPU allows, with a
durable cursor (`ecg_analysis.py`, `ecg_cursor.py`).
"""
