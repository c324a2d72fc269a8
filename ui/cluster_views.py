"""The Train page's Cluster expander: the Ray cluster's nodes and totals, when the app runs its jobs on Ray.

With the default runner (threads in this process) it draws nothing at all, so the page is unchanged.
Where each job runs is the job panel's line, not this view's. Where this stops: it reads
``runner.cluster()`` and draws; it connects to nothing and submits nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

if TYPE_CHECKING:
    from engine.ray_backend import ClusterInfo


def nodes_table(info: ClusterInfo) -> pd.DataFrame:
    """One row per node: its address, whether it is alive, its CPUs, GPUs and memory (GB)."""
    rows = [
        {
            "node": f"{node.ip} ({node.node_id[:8]})",
            "alive": "yes" if node.alive else "no",
            "CPUs": f"{node.cpus:g}",  # as text: a table would print 8.0000
            "GPUs": f"{node.gpus:g}",
            "memory (GB)": f"{node.memory_gb:.1f}",
        }
        for node in info.nodes
    ]
    return pd.DataFrame(rows, columns=["node", "alive", "CPUs", "GPUs", "memory (GB)"])


def totals_line(info: ClusterInfo) -> str:
    """The cluster in one line: its address, the nodes alive of all it knows, its CPUs and GPUs."""
    alive = sum(node.alive for node in info.nodes)
    return (
        f"{info.address} · {alive} of {len(info.nodes)} nodes alive · "
        f"{info.total_cpus:g} CPUs · {info.total_gpus:g} GPUs"
    )


def cluster_panel(runner: Any) -> None:
    """A collapsed "Cluster" expander with the nodes and totals when ``runner`` runs jobs on Ray; else nothing."""
    if getattr(runner, "backend", "threads") != "ray":
        return
    with st.expander("Cluster", expanded=False):
        try:
            info = runner.cluster()
        except (ConnectionError, OSError, RuntimeError) as err:  # the head did not answer: say so, keep the page
            st.warning(f"The Ray cluster did not answer: {err}")
            return
        if info is None:
            st.caption("Not connected to a Ray cluster yet: it connects when the first job starts.")
            return
        st.caption(totals_line(info))
        st.table(nodes_table(info), hide_index=True)  # a few rows: plain text, readable in any browser
