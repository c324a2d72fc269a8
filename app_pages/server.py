"""Server page (admins only): every user's jobs with Cancel, usage per user, and the limits each user has."""

import pandas as pd
import streamlit as st

from engine import limits, owners, usage
from engine.jobs import FINISHED, JobError
from ui.jobs_panel import STATUS_ICONS, get_runner, progress_text

st.title("Server")
if not owners.current().admin:
    st.error("This page is for administrators of this server.")
    st.stop()

runner = get_runner()
active = [s for s in runner.list(events=False) if s.status not in FINISHED]
st.subheader(f"Jobs queued or running ({len(active)})")
if not active:
    st.caption("No job is queued or running.")
for snap in active:
    cols = st.columns([2, 3, 5, 1])
    cols[0].write(snap.owner)
    cols[1].write(f"{STATUS_ICONS.get(snap.status, '')} {snap.title}")
    cols[2].progress(snap.progress, text=progress_text(snap))
    if cols[3].button("Cancel", key=f"admin-cancel-{snap.id}"):
        try:
            runner.cancel(snap.id, owner=owners.owner_name(), admin=True)
        except JobError as err:
            st.error(str(err))

st.subheader("Usage per user")
jobs = runner.usage()
disk = usage.disk_by_user()
rows = []
for name in sorted(set(jobs) | set(disk)):
    mine, space, allowed = jobs.get(name, {}), disk.get(name, {}), limits.limits_for(name)
    rows.append(
        {
            "user": name,
            "queued": int(mine.get("queued", 0)),
            "running": int(mine.get("running", 0)),
            "finished (last day)": int(mine.get("finished", 0)),
            "job time (min)": round(mine.get("seconds", 0.0) / 60, 1),
            "disk (MB)": round(sum(space.values()) / 1e6, 1),
            "uploads (MB)": round(space.get("uploads", 0) / 1e6, 1),
            "max jobs": allowed.max_jobs,
            "upload limit (MB)": allowed.upload_mb,
            "disk limit (GB)": allowed.disk_gb,
        }
    )
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True)
else:
    st.caption("No user has made anything yet.")

st.subheader("Limits")
st.caption(
    "The server default applies to every user without a value of their own. The same from a shell: "
    "`python -m engine limits show` and `python -m engine limits set FIELD VALUE [--user NAME]`."
)
with st.form("limits_form"):
    cols = st.columns([2, 2, 2])
    who = cols[0].text_input("User (empty: the server default)", key="limit_user")
    field = cols[1].selectbox("Limit", limits.FIELDS, key="limit_field")
    value = cols[2].text_input("Value", key="limit_value", help="'default' removes a user's own value.")
    if st.form_submit_button("Set"):
        try:
            limits.set_limit(field, value.strip(), user=who.strip() or None)
            st.success(f"{field} set for {who.strip() or 'everyone'}.")
        except ValueError as err:
            st.error(str(err))
