import torch, time
from sound2image.transformer import ImageTransformer, ImageTransformerConfig, SamplingConfig, generate
from sound2image.training.transformer import _autocast_dtype
dev = torch.device("cuda")
cfg = ImageTransformerConfig(audio_sections=50, audio_bins=80, d_model=128, n_encoder_layers=2, n_decoder_layers=4, n_heads=4, dropout=0.0, query_block=32, memory_length=64)
for mode in ("bf16", "fp16"):
    torch.manual_seed(0)
    m = ImageTransformer(cfg).to(dev).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    dt = _autocast_dtype(mode, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=dt == torch.float16)
    A = torch.randn(64, 50, 80, device=dev); P = torch.randint(0, 256, (64, 1024), device=dev)
    t = time.time()
    for i in range(100):
        with torch.autocast("cuda", dtype=dt):
            _, loss = m(A, m.decoder_inputs(P), P)
        opt.zero_grad(); scaler.scale(loss).backward(); scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); scaler.step(opt); scaler.update()
    torch.cuda.synchronize()
    print(mode, dt, "loss", round(loss.item(), 3), "100 steps of 64 images:", round(time.time() - t, 1), "s")
m.eval()
sc = SamplingConfig(temperature=0.9, top_k=50, guidance_scale=2.0, seed=1)
a = generate(m, A[:4], sc); b = generate(m, A[:4], sc, use_cache=False)
print("cuda cached == uncached:", torch.equal(a, b))
