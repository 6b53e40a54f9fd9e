// a run's page: its status, steps, events and cluster every second while it lives; the open
// log tab newest first, older pages on demand, new lines followed
const W=Number(document.body.dataset.workspace),N=Number(document.body.dataset.run);let stream='job',last=0,oldest=null,live=true;
function row(cells){const tr=document.createElement('tr');for(const c of cells){
  const td=document.createElement('td');td.textContent=c==null?'-':c;tr.append(td)}return tr}
function lines(page,where){const text=page.lines.map(l=>l.text.endsWith('\n')?l.text:l.text+'\n');
  const log=document.getElementById('log');
  if(where==='end'){log.append(text.join(''));log.scrollTop=log.scrollHeight}
  else{log.prepend(text.join(''))}}
async function openTab(name){stream=name;last=0;oldest=null;
  document.getElementById('log').textContent='';
  for(const b of document.querySelectorAll('#tabs button'))b.classList.toggle('on',b.dataset.s===name);
  const page=await (await fetch(`/api/runs/${W}/${N}/log?stream=${encodeURIComponent(name)}`)).json();
  page.lines.reverse();lines(page,'end');last=page.total;oldest=page.before}
async function older(){if(!oldest)return;
  const page=await (await fetch(`/api/runs/${W}/${N}/log?stream=${encodeURIComponent(stream)}&before=${oldest}`)).json();
  page.lines.reverse();lines(page,'start');oldest=page.before}
async function follow(){
  const page=await (await fetch(`/api/runs/${W}/${N}/log?stream=${encodeURIComponent(stream)}&after=${last}&limit=2000`)).json();
  if(page.lines.length){lines(page,'end');last=page.lines[page.lines.length-1].seq}}
async function refresh(){const run=await (await fetch(`/api/runs/${W}/${N}`)).json();
  const s=document.getElementById('status');s.textContent=run.status;s.className=run.status;
  document.getElementById('steps').textContent=run.steps.filter(x=>x.status==='finished').length+'/'+run.steps.length;
  const steps=document.querySelector('#step-table tbody');steps.replaceChildren(
    ...run.steps.map(x=>row([x.name,x.status,x.started_at,x.duration_seconds,x.exit_code])));
  const ev=document.querySelector('#events tbody');ev.replaceChildren(
    ...run.events.map(e=>row([e.time,e.component,e.what,e.why])));
  const cl=document.querySelector('#cluster tbody');cl.replaceChildren(
    ...Object.entries(run.cluster).filter(([k,v])=>typeof v!=='object').map(([k,v])=>row([k,v])));
  const links=document.getElementById('links');links.replaceChildren();
  if(run.report){const a=document.createElement('a');a.href=`/runs/${W}/${N}/report`;a.textContent='report';links.append(a,' ')}
  if(run.dashboard){const a=document.createElement('a');a.href=run.dashboard;a.textContent='dashboard';links.append(a)}
  const tabs=document.getElementById('tabs');
  for(const name of run.streams){if(!tabs.querySelector(`[data-s="${name}"]`)){
    const b=document.createElement('button');b.dataset.s=name;b.textContent=name;
    b.onclick=()=>openTab(name);tabs.append(b)}}
  live=run.status==='running'||run.status==='pending';return run}
async function files(){const list=await (await fetch(`/api/files/${W}`)).json();
  const box=document.getElementById('files');box.replaceChildren();
  for(const f of list){const a=document.createElement('a');a.href=`/files/${W}/`+f.path.split('/').map(encodeURIComponent).join('/');
    a.textContent=f.path;const p=document.createElement('div');p.append(a,` ${f.size} bytes`);
    if(f.image){const img=document.createElement('img');img.className='output';img.src=a.href;img.alt=f.path;p.append(img)}
    box.append(p)}}
document.getElementById('older').onclick=older;
refresh().then(()=>openTab('job'));files();
setInterval(async()=>{const was=live;await refresh();await follow();if(was&&!live)files()},1000);
