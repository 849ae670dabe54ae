curl --location "https://dashscope.aliyuncs.com/api/v1/services/aigc/text-generation/generation" \
--header "Authorization: Bearer $DASHSCOPE_API_KEY" \
--header "Content-Type: application/json" \
--data '{
 "model": "qwen-plus",
 "input":{
 "messages":[
 {
 "role": "system",
 "content": "You are a helpful assistant."
 },
 {
 "role": "user",
 "content": "你是谁？"
 }
 ]
 },
 "parameters": {
 "result_format": "message"
 }
}'

