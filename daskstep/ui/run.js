// a run's page: its status, steps, events and cluster every second while it lives; the open
// log tab newest first, older pages on demand, new lines followed
const W=Number(document.body.dataset.workspace),N=Number(document.body.dataset.run);
let stream='job',last=null,oldest=null,live=true,tab=0;  // tab: which openTab a reply is for
function row(cells){const tr=document.createElement('tr');for(const c of cells){
  const td=document.createElement('td');td.textContent=c==null?'-':c;tr.append(td)}return tr}
// a cursor: a line number, or one per worker for the merged tab (worker-0:12,worker-1:40)
function enc(c){return typeof c==='object'?Object.entries(c).map(([k,v])=>k+':'+v).join(','):c}
async function page(query){const base=`/api/runs/${W}/${N}/log?stream=${encodeURIComponent(stream)}`;
  return (await fetch(base+query)).json()}
function lines(got,where){const text=got.lines.map(l=>(l.stream?`[${l.stream}] `:'')+
  (l.text.endsWith('\n')?l.text:l.text+'\n'));
  const log=document.getElementById('log');
  if(where==='end'){log.append(text.join(''));log.scrollTop=log.scrollHeight}
  else{log.prepend(text.join(''))}}
async function openTab(name){stream=name;last=null;oldest=null;const mine=++tab;
  document.getElementById('log').textContent='';
  for(const b of document.querySelectorAll('#tabs button'))b.classList.toggle('on',b.dataset.s===name);
  let got;try{got=await page('')}catch(e){got={lines:[],total:0}}if(mine!==tab)return;
  got.lines.reverse();lines(got,'end');last=got.after??got.total;oldest=got.before}
async function openStep(k){stream='job';last=null;oldest=null;const mine=++tab;
  document.getElementById('log').textContent='';
  for(const b of document.querySelectorAll('#tabs button'))b.classList.toggle('on',b.dataset.s==='job');
  let got;try{got=await page('&limit=1000&step='+k)}catch(e){return}if(mine!==tab||!got.lines)return;
  lines(got,'end');document.getElementById('log').scrollTop=0;
  oldest=got.lines.length?got.lines[0].seq:null}  // older lines on demand; no following here
async function older(){if(!oldest)return;const mine=tab;
  const got=await page('&before='+encodeURIComponent(enc(oldest)));if(mine!==tab)return;
  got.lines.reverse();lines(got,'start');oldest=got.before}
async function follow(){const mine=tab;if(last===null)return;  // the tab's first page comes first
  const got=await page('&limit=2000&after='+encodeURIComponent(enc(last)));if(mine!==tab)return;
  if(got.lines.length){lines(got,'end');last=got.after??got.lines[got.lines.length-1].seq}}
async function refresh(){const run=await (await fetch(`/api/runs/${W}/${N}`)).json();
  const s=document.getElementById('status');s.textContent=run.status;s.className=run.status;
  document.getElementById('steps').textContent=run.steps.filter(x=>x.status==='finished').length+'/'+run.steps.length;
  const steps=document.querySelector('#step-table tbody');steps.replaceChildren(
    ...run.steps.map((x,i)=>{const r=row(['',x.status,x.started_at,x.duration_seconds,x.exit_code]);
      const b=document.createElement('button');b.className='step';b.textContent=x.name;
      b.title="the step's lines in the job's log";b.onclick=()=>openStep(i+1);
      r.firstChild.append(b);return r}));
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
