"""The doctor's page and the patient report in two languages: zh-CN (default) and English.

One dictionary per language; a missing key falls back to English, then to the
key itself, so a new string never breaks a page. Condition, tier, severity,
state and rhythm names are keyed by their contract values.
"""

from __future__ import annotations

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"

_EN: dict[str, str] = {
    "app": "vitalgate — village doctor's console",
    "clinic": "Clinic",
    "nav.alerts": "Alerts", "nav.patients": "Patients", "nav.devices": "Devices", "nav.logout": "Log out",
    "login.title": "Sign in", "login.password": "Clinic password (token)", "login.name": "Your name",
    "login.submit": "Sign in", "login.bad": "Wrong password.", "login.hint": "The token is in the gateway config (http.token).",
    "alerts.title": "Active alerts", "alerts.none": "No active alerts. All quiet.",
    "alerts.recent": "Recently closed (24 h)", "alerts.live": "live", "alerts.offline": "reconnecting…",
    "col.severity": "Severity", "col.condition": "Condition", "col.patient": "Patient", "col.tier": "Tier",
    "col.opened": "Opened", "col.state": "State", "col.actions": "Actions", "col.value": "Value",
    "col.bp": "Latest BP", "col.glucose": "Latest glucose", "col.rhythm": "Heart rhythm",
    "col.adherence": "Adherence (7 d)", "col.trend": "Systolic, 7 d", "col.alerts": "Alerts",
    "col.device": "Device", "col.kind": "Kind", "col.battery": "Battery", "col.last_seen": "Last seen",
    "col.connection": "Connection", "col.transport": "Link", "col.labels": "Labels", "col.by": "By",
    "col.at": "At", "col.what": "What", "col.detail": "Detail",
    "act.ack": "Acknowledge", "act.snooze": "Snooze", "act.details": "Details",
    "act.report": "Report", "act.report_pdf": "PDF", "act.fhir": "FHIR export",
    "patients.title": "Patients", "devices.title": "Devices",
    "patient.title": "Patient", "patient.latest": "Latest readings", "patient.bp_trend": "Blood pressure (mmHg)",
    "patient.glucose_trend": "Glucose (mmol/L)", "patient.ecg_live": "Live ECG strip",
    "patient.ecg_none": "No ECG stored for this patient yet.", "patient.alerts": "Alerts",
    "patient.reports": "Reports", "patient.rhythm": "Heart rhythm", "patient.devices": "Devices",
    "patient.no_data": "No readings yet.",
    "alert.title": "Alert", "alert.evidence": "Evidence", "alert.strip": "ECG strip around the event",
    "alert.trail": "Audit trail", "alert.no_strip": "No ECG strip with this alert.",
    "missed": "missed", "days_measured": "days measured", "ago": "ago", "never": "never",
    "conn.connected": "connected", "conn.online": "reporting", "conn.silent": "silent", "conn.offline": "offline",
    "conn.never": "never seen", "conn.disconnected": "disconnected",
    "tier.village": "Village doctor", "tier.township": "Township", "tier.county": "County", "tier.emergency": "120 emergency",
    "sev.critical": "Critical", "sev.high": "High", "sev.medium": "Medium", "sev.low": "Low",
    "state.firing": "firing", "state.acknowledged": "acknowledged", "state.resolved": "resolved",
    "state.snoozed": "snoozed", "state.held": "held",
    "kind.blood_pressure": "BP cuff", "kind.glucose": "Glucose meter", "kind.ecg": "ECG patch", "kind.spo2": "SpO2 clip",
    "rhythm.sinus": "Sinus", "rhythm.sinus_bradycardia": "Sinus bradycardia", "rhythm.sinus_tachycardia": "Sinus tachycardia",
    "rhythm.af": "Atrial fibrillation", "rhythm.vt": "Ventricular tachycardia", "rhythm.vf": "Ventricular fibrillation",
    "rhythm.asystole": "Asystole", "rhythm.unknown": "Unreadable",
    "cond.bp_high": "High blood pressure", "cond.bp_crisis": "Hypertensive crisis",
    "cond.hypoglycemia": "Low glucose", "cond.hypoglycemia_severe": "Severe low glucose",
    "cond.hyperglycemia": "High glucose", "cond.hyperglycemia_crisis": "Very high glucose",
    "cond.spo2_low": "Low SpO2", "cond.bradycardia": "Bradycardia", "cond.tachycardia": "Tachycardia",
    "cond.af": "Atrial fibrillation", "cond.af_rvr": "AF with rapid rate", "cond.vt": "Ventricular tachycardia",
    "cond.vt_sustained": "Sustained VT / VF", "cond.pause": "Pause", "cond.asystole": "Asystole",
    "cond.pvc_frequent": "Frequent PVCs", "cond.missed_readings": "Missed readings",
    "cond.device_offline": "Device offline", "cond.lead_off": "ECG lead off", "cond.battery_low": "Battery low",
    "cond.channel_failed": "Notification channel failing",
    "snooze.15m": "15 min", "snooze.30m": "30 min", "snooze.1h": "1 h", "snooze.2h": "2 h",
    "report.title": "Health report", "report.period": "Period", "report.generated": "Generated",
    "report.bp": "Blood pressure", "report.bp_control": "Control rate (<140/90)", "report.bp_mean": "Mean",
    "report.bp_n": "Readings", "report.glucose": "Glucose", "report.tir": "Time in range (3.9–10.0)",
    "report.hypo": "Hypoglycaemia episodes (<3.9)", "report.hypo_severe": "of which severe (<3.0)",
    "report.below": "below range", "report.above": "above range", "report.in_range": "in range",
    "report.ecg": "Heart rhythm (ECG patch)", "report.af_burden": "AF burden", "report.monitored": "Monitored",
    "report.events": "Arrhythmia events", "report.alerts": "Alerts and how fast they were acknowledged",
    "report.ack_median": "Median time to acknowledge", "report.ack_max": "Slowest", "report.acked": "Acknowledged",
    "report.raised": "Raised", "report.none": "No data in this period.", "report.target": "target",
    "report.hr": "Heart rate (bpm)", "report.date": "Date", "report.n_alerts": "Alerts",
    "report.unacked": "never acknowledged",
    "fhir.title": "FHIR R4 Bundle",
    "nav.screening": "Screening", "kind.ecg_handheld": "Handheld ECG",
    "col.time": "Time", "col.result": "Result", "col.hr": "Heart rate",
    "act.refer": "Mark referred",
    "screen.title": "AF screening (short ECG strips)", "screen.today": "Today's strips",
    "screen.referrals": "To refer: AF and other rhythms not yet referred",
    "screen.referred_recent": "Referred (30 days)", "screen.referred": "referred",
    "screen.none_today": "No strips today.", "screen.no_referrals": "Nobody waits for a referral.",
    "screen.none_patient": "No screening strips for this patient yet.",
    "screen.patient_strips": "Screening strips", "screen.all_for_patient": "all of this patient's strips",
    "screen.label.normal": "Normal rhythm", "screen.label.af": "Atrial fibrillation",
    "screen.label.other": "Other rhythm", "screen.label.noisy": "Too noisy to read",
    "screen.retake": "Please take it again",
    "screen.retake_why": "the strip is too noisy to read: keep the patient still, thumbs flat on the electrodes, 30 s.",
    "screen.confidence": "Confidence", "screen.strip": "ECG strip", "screen.details": "Details",
    "screen.probabilities": "Probabilities", "screen.beats": "beats", "screen.lead": "lead",
    "screen.model": "Model", "screen.received": "Received",
    "screen.not_alarm": "A screening, not an alarm: nobody is paged; AF and other rhythms are referred.",
    "report.screening": "AF screening (short ECG strips)", "report.referred": "Referred",
    "login.account": "Account", "login.account_password": "Password", "login.account_bad": "Wrong name or password.",
    "login.account_hint": "Your account is set up by the clinic's technician (vitalgate passwd).",
    "role.doctor": "doctor", "role.technician": "technician", "role.reader": "reader",
    "error.forbidden": "Your account ({role}) may not see this page.",
}

_ZH: dict[str, str] = {
    "app": "vitalgate 村医工作台",
    "clinic": "卫生室",
    "nav.alerts": "告警", "nav.patients": "患者", "nav.devices": "设备", "nav.logout": "退出",
    "login.title": "登录", "login.password": "卫生室密码（令牌）", "login.name": "您的姓名",
    "login.submit": "登录", "login.bad": "密码错误。", "login.hint": "令牌在网关配置文件中（http.token）。",
    "alerts.title": "当前告警", "alerts.none": "当前没有告警，一切平稳。",
    "alerts.recent": "最近关闭（24小时）", "alerts.live": "实时", "alerts.offline": "正在重连…",
    "col.severity": "级别", "col.condition": "情况", "col.patient": "患者", "col.tier": "层级",
    "col.opened": "发生时间", "col.state": "状态", "col.actions": "操作", "col.value": "数值",
    "col.bp": "最近血压", "col.glucose": "最近血糖", "col.rhythm": "心律",
    "col.adherence": "依从性（7天）", "col.trend": "收缩压（7天）", "col.alerts": "告警",
    "col.device": "设备", "col.kind": "类型", "col.battery": "电量", "col.last_seen": "最后联系",
    "col.connection": "连接状态", "col.transport": "通道", "col.labels": "标签", "col.by": "操作人",
    "col.at": "时间", "col.what": "事件", "col.detail": "详情",
    "act.ack": "确认", "act.snooze": "暂缓", "act.details": "详情",
    "act.report": "健康报告", "act.report_pdf": "PDF", "act.fhir": "FHIR 导出",
    "patients.title": "患者", "devices.title": "设备",
    "patient.title": "患者", "patient.latest": "最近测量", "patient.bp_trend": "血压（mmHg）",
    "patient.glucose_trend": "血糖（mmol/L）", "patient.ecg_live": "实时心电图",
    "patient.ecg_none": "该患者暂无心电数据。", "patient.alerts": "告警",
    "patient.reports": "报告", "patient.rhythm": "心律", "patient.devices": "设备",
    "patient.no_data": "暂无测量数据。",
    "alert.title": "告警", "alert.evidence": "依据", "alert.strip": "事件前后心电图",
    "alert.trail": "处理记录", "alert.no_strip": "该告警没有心电图片段。",
    "missed": "次漏测", "days_measured": "天有测量", "ago": "前", "never": "从未",
    "conn.connected": "已连接", "conn.online": "在线", "conn.silent": "无数据", "conn.offline": "离线",
    "conn.never": "未联系过", "conn.disconnected": "未连接",
    "tier.village": "村医", "tier.township": "乡镇卫生院", "tier.county": "县监测中心", "tier.emergency": "120急救",
    "sev.critical": "危急", "sev.high": "高", "sev.medium": "中", "sev.low": "低",
    "state.firing": "待处理", "state.acknowledged": "已确认", "state.resolved": "已解除",
    "state.snoozed": "已暂缓", "state.held": "已抑制",
    "kind.blood_pressure": "血压计", "kind.glucose": "血糖仪", "kind.ecg": "心电贴", "kind.spo2": "血氧仪",
    "rhythm.sinus": "窦性心律", "rhythm.sinus_bradycardia": "窦性心动过缓", "rhythm.sinus_tachycardia": "窦性心动过速",
    "rhythm.af": "房颤", "rhythm.vt": "室性心动过速", "rhythm.vf": "室颤", "rhythm.asystole": "心脏停搏",
    "rhythm.unknown": "信号不清",
    "cond.bp_high": "血压偏高", "cond.bp_crisis": "高血压危象", "cond.hypoglycemia": "低血糖",
    "cond.hypoglycemia_severe": "严重低血糖", "cond.hyperglycemia": "高血糖", "cond.hyperglycemia_crisis": "血糖危急升高",
    "cond.spo2_low": "血氧偏低", "cond.bradycardia": "心动过缓", "cond.tachycardia": "心动过速",
    "cond.af": "房颤", "cond.af_rvr": "房颤伴快心室率", "cond.vt": "室性心动过速",
    "cond.vt_sustained": "持续性室速/室颤", "cond.pause": "心脏停搏（长间歇）", "cond.asystole": "心脏停搏",
    "cond.pvc_frequent": "频发室性早搏", "cond.missed_readings": "漏测", "cond.device_offline": "设备离线",
    "cond.lead_off": "心电导联脱落", "cond.battery_low": "电量低", "cond.channel_failed": "通知通道故障",
    "snooze.15m": "15分钟", "snooze.30m": "30分钟", "snooze.1h": "1小时", "snooze.2h": "2小时",
    "report.title": "健康报告", "report.period": "统计周期", "report.generated": "生成时间",
    "report.bp": "血压", "report.bp_control": "控制率（<140/90）", "report.bp_mean": "平均值",
    "report.bp_n": "测量次数", "report.glucose": "血糖", "report.tir": "目标范围内比例（3.9–10.0）",
    "report.hypo": "低血糖次数（<3.9）", "report.hypo_severe": "其中严重（<3.0）",
    "report.below": "低于范围", "report.above": "高于范围", "report.in_range": "范围内",
    "report.ecg": "心律（心电贴）", "report.af_burden": "房颤负荷", "report.monitored": "监测时长",
    "report.events": "心律失常事件", "report.alerts": "告警及确认速度",
    "report.ack_median": "确认用时中位数", "report.ack_max": "最慢", "report.acked": "已确认",
    "report.raised": "发出", "report.none": "本周期无数据。", "report.target": "目标",
    "report.hr": "心率（次/分）", "report.date": "日期", "report.n_alerts": "告警数",
    "report.unacked": "未确认",
    "fhir.title": "FHIR R4 数据包",
    "nav.screening": "房颤筛查", "kind.ecg_handheld": "手持心电仪",
    "col.time": "时间", "col.result": "结果", "col.hr": "心率",
    "act.refer": "标记已转诊",
    "screen.title": "房颤筛查（短时心电）", "screen.today": "今日心电",
    "screen.referrals": "待转诊：房颤及其他心律，尚未转诊",
    "screen.referred_recent": "已转诊（30天）", "screen.referred": "已转诊",
    "screen.none_today": "今日暂无心电记录。", "screen.no_referrals": "暂无待转诊患者。",
    "screen.none_patient": "该患者暂无筛查心电。",
    "screen.patient_strips": "短时心电筛查", "screen.all_for_patient": "该患者全部筛查心电",
    "screen.label.normal": "正常心律", "screen.label.af": "房颤",
    "screen.label.other": "其他心律", "screen.label.noisy": "干扰大，无法判读",
    "screen.retake": "请重新采集",
    "screen.retake_why": "心电干扰太大无法判读：请患者保持安静，双手拇指平放在电极上，采集30秒。",
    "screen.confidence": "可信度", "screen.strip": "心电图", "screen.details": "详情",
    "screen.probabilities": "各类概率", "screen.beats": "次心搏", "screen.lead": "导联",
    "screen.model": "模型", "screen.received": "接收时间",
    "screen.not_alarm": "筛查结果不是告警，不会呼叫任何人；房颤及其他心律请转诊。",
    "report.screening": "房颤筛查（短时心电）", "report.referred": "已转诊",
    "login.account": "账号", "login.account_password": "密码", "login.account_bad": "账号或密码错误。",
    "login.account_hint": "账号由卫生室的技术员设置（vitalgate passwd）。",
    "role.doctor": "医生", "role.technician": "技术员", "role.reader": "查阅",
    "error.forbidden": "您的账号（{role}）无权查看此页面。",
}

_TABLES = {"en": _EN, "zh": _ZH}


def pick_lang(query: str | None, cookie: str | None) -> str:
    for v in (query, cookie):
        if v in LANGS:
            return v  # type: ignore[return-value]
    return DEFAULT_LANG


def t(lang: str, key: str) -> str:
    return _TABLES.get(lang, _ZH).get(key) or _EN.get(key) or key


def translator(lang: str):  # type: ignore[no-untyped-def]
    def _t(key: str) -> str:
        return t(lang, key)
    return _t


def ago(lang: str, seconds: float | None) -> str:
    """'5 min ago' / '5分钟前'."""
    if seconds is None:
        return t(lang, "never")
    s = max(0, int(seconds))
    if lang == "zh":
        if s < 60:
            return f"{s}秒前"
        if s < 3600:
            return f"{s // 60}分钟前"
        if s < 86400:
            return f"{s // 3600}小时{(s % 3600) // 60}分钟前"
        return f"{s // 86400}天前"
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h {(s % 3600) // 60} min ago"
    return f"{s // 86400} d ago"


def duration_text(lang: str, seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if lang == "zh":
        return (f"{h}小时" if h else "") + (f"{m}分" if m else "") + (f"{sec}秒" if sec and not h else "") or "0秒"
    return ((f"{h} h " if h else "") + (f"{m} min " if m else "") + (f"{sec} s" if sec and not h else "")).strip() or "0 s"
