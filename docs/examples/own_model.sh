#!/usr/bin/env bash
# Your own model, from a trained classifier to alerts on Kafka: the commands of the
# README's "Your own model" section, runnable at once. Run it from the checkout's root
# with the virtual environment active and a broker up (make kafka-up):
#
#   . .venv/bin/activate && bash docs/examples/own_model.sh
#
# Every command reads the worker's DMON_* variables (DMON_BOOTSTRAP_SERVERS for another
# cluster, DMON_INPUT_TOPIC, ...). It writes into ./my-model.
set -euo pipefail

# guide:start
# 1. A classifier to monitor (here a Keras MLP on scikit-learn's breast-cancer data;
#    use your own .keras file and clean rows instead).
python docs/examples/train_classifier.py my-model

# 2. Train its detector on clean inputs. Half of them are held out to set the threshold,
#    so that it rests on 200+ scores.
distillation-monitor fit --model my-model/classifier.keras --data my-model/train.npy \
    --holdout-fraction 0.5 --data-type tabular --name breast-cancer-mlp --out my-model/detector

# 3. What the detector expects (input_shape, n_classes) and its threshold.
distillation-monitor info my-model/detector

# 4. The topics: input, alerts, dead letters and drift events.
distillation-monitor topics --partitions 3

# 5. The worker. It stops here after the 286 records sent below; as a service, leave
#    --max-records out (and see "Deploy").
distillation-monitor run --detector my-model/detector --max-records 286 &

# 6. Send records: the 143 held-out rows, then the same rows shifted by noise.
python docs/examples/send_records.py my-model/test.npy my-model/shifted.npy
wait  # for the worker to score them and stop

# 7. Read the alerts as a subscriber would.
distillation-monitor alerts
# guide:end
