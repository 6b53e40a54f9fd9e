// the runs list: refreshed from /api/runs every 2 s
function cell(text){const td=document.createElement('td');td.textContent=text;return td}
async function refresh(){
  const runs=await (await fetch('/api/runs')).json();
  const body=document.querySelector('#runs tbody');body.replaceChildren();
  for(const r of runs){
    const tr=document.createElement('tr');tr.className='run';
    const a=document.createElement('a');a.href=`/runs/${r.workspace}/${r.run}`;
    a.textContent=r.name;const first=document.createElement('td');first.append(a);tr.append(first);
    const st=cell(r.status||'?');st.className='status '+(r.status||'');
    tr.append(cell('#'+r.run),st,cell(r.steps),cell(r.started_at||'-'),
      cell(r.duration_seconds==null?'-':r.duration_seconds.toFixed(1)+' s'),
      cell(r.exit_code==null?'-':r.exit_code),cell(r.backend));
    const report=document.createElement('td');tr.append(report);
    if(r.report){const link=document.createElement('a');link.href=`/runs/${r.workspace}/${r.run}/report`;
      link.textContent='report';report.append(link)}
    body.append(tr)}
}
refresh();setInterval(refresh,2000);
