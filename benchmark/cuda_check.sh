#!/bin/bash
# The --cuda check on a GPU machine, from the repository root (docs/results.md, Speed, "--cuda on a GPU"):
#     ITER=5 SPEED=1 bash benchmark/cuda_check.sh 2>&1 | tee cuda_check.log
# For each script, on GridNavi with its preset, on the GPU and on the CPU side by side: a run of 2 x ITER iterations
# against one of ITER iterations resumed to 2 x ITER (benchmark/compare_metrics.py: identical training metrics?), the
# checkpoint evaluated by evaluate.py on the CPU and on the GPU, and (GPU) the checkpoint trained on without a GPU.
# With SPEED=1, then benchmark/speed.py on GridNavi and CheetahDir, on the GPU and on the CPU (16 threads).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
R=$PWD; O=${OUT:-/tmp/gpuout}; mkdir -p $O; N=${ITER:-5}
nvidia-smi -L
python3 -c "import torch, gymnasium, mujoco, tyro; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'gymnasium', gymnasium.__version__, 'mujoco', mujoco.__version__)"
one() {
    s=$1; dev=$2
    F=$(python3 -c "import $s as m; a = m.apply_preset(m.Args(env_id='GridNavi')); print(a.num_envs * a.num_steps)")
    D=/tmp/g/$s/$dev; rm -rf $D; mkdir -p $D/straight $D/legs
    FLAG=$([ $dev = cuda ] && echo --cuda)
    A="--env-id GridNavi --seed 5 --num-eval-tasks 4 --eval-every 0 --save-model $FLAG"
    (cd $D/straight && python3 $R/$s.py $A --total-timesteps $((2 * N * F)) > out.txt 2> err.txt) || { echo "FAIL $s $dev straight"; tail -5 $D/straight/err.txt; }
    (cd $D/legs && python3 $R/$s.py $A --total-timesteps $((N * F)) > out1.txt 2> err1.txt) || { echo "FAIL $s $dev leg1"; tail -5 $D/legs/err1.txt; }
    C=$(ls $D/legs/runs/*/checkpoint.pt)
    (cd $D/legs && python3 $R/$s.py --resume $C --total-timesteps $((2 * N * F)) $FLAG > out2.txt 2> err2.txt) || { echo "FAIL $s $dev resume"; tail -5 $D/legs/err2.txt; }
    grep -h -i "warn" $D/*/err*.txt | sort | uniq -c | head -5
    python3 $R/benchmark/compare_metrics.py $s $dev $D/straight/runs/*/metrics.csv $D/legs/runs/*/metrics.csv
    if [ $dev = cuda ]; then  # a GPU's checkpoint trains on where there is no GPU
      mkdir -p $D/oncpu && (cd $D/oncpu && CUDA_VISIBLE_DEVICES= python3 $R/$s.py --resume $C --total-timesteps $((3 * N * F)) > out.txt 2> err.txt) && echo "$s GPU checkpoint resumed on the CPU: $(tail -1 $D/oncpu/out.txt)" || { echo "FAIL $s resume on CPU"; tail -5 $D/oncpu/err.txt; }
    fi
    CK=$(ls $D/straight/runs/*/checkpoint.pt)
    echo "$s $dev eval.json: $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['return'])" $(dirname $CK)/eval.json)"
    echo "$s $dev evaluate.py cpu:  $(CUDA_VISIBLE_DEVICES= python3 $R/evaluate.py $CK 2>/dev/null | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['return'])")"
    echo "$s $dev evaluate.py cuda: $(python3 $R/evaluate.py $CK --cuda 2>/dev/null | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['return'])")"
}
for s in varibad_standard varibad_hyper rl2_standard rl2_hyper; do
  for dev in cuda cpu; do one $s $dev > /tmp/log_${s}_$dev.txt 2>&1 & done
done
wait
for s in varibad_standard varibad_hyper rl2_standard rl2_hyper; do cat /tmp/log_${s}_cuda.txt /tmp/log_${s}_cpu.txt; done
date
[ -n "${SPEED:-}" ] || exit 0
for dev in "--cuda" ""; do
  name=$([ -n "$dev" ] && echo gpu || echo cpu16)
  python3 benchmark/speed.py $dev --env-ids GridNavi --iterations 10 --threads 16 --out $O/speed_${name}_gridnavi 2>&1 | grep -v "^|---"
  python3 benchmark/speed.py $dev --env-ids CheetahDir --iterations 5 --threads 16 --out $O/speed_${name}_cheetahdir 2>&1 | grep -v "^|---"
  date
done
